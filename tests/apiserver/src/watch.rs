//! Watch streams: replay from a resourceVersion out of the history ring, synthetic
//! ADDED events for "from now" watches, streaming lists (`sendInitialEvents`),
//! bookmarks, selector transitions, timeouts, and 410 Gone as an ERROR event.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use super::api::{DEFAULT_WATCH_TIMEOUT, Req, selectors, served};
use super::registry::ResourceType;
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Body;
use super::state::State;
use super::status::{ApiError, Cause, Details, DetailsShape};
use super::store::{EventType, StoredEvent};
use super::table::{self, IncludeObject};

/// How often bookmarks are sent when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

struct Filter {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches_object(obj)
    }

    /// The event a client sees for a stored event, if any (selector transitions turn
    /// MODIFIED into ADDED or DELETED).
    fn translate(&self, e: &StoredEvent) -> Option<(&'static str, Value)> {
        if e.key != self.rt.storage_key() {
            return None;
        }
        if let Some(ns) = &self.namespace
            && &e.namespace != ns
        {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.previous.as_ref().is_some_and(|p| self.matches(p));
        let kind = match e.event_type {
            EventType::Added if now => "ADDED",
            EventType::Modified if now && before => "MODIFIED",
            EventType::Modified if now => "ADDED",
            EventType::Modified if before => "DELETED",
            EventType::Deleted if now => "DELETED",
            _ => return None,
        };
        Some((kind, served(&self.rt, &e.object)))
    }
}

enum Encoding {
    Object,
    Metadata,
    Table { first: bool, include: IncludeObject },
}

impl Encoding {
    fn encode(&mut self, rt: &ResourceType, kind: &str, obj: Value) -> Vec<u8> {
        let object = match self {
            Self::Object => obj,
            Self::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
            }
            Self::Table { first, include } => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                let t = table::table(
                    rt,
                    &[&obj],
                    json!({"resourceVersion": rv}),
                    *include,
                    *first,
                );
                *first = false;
                t
            }
        };
        event_line(kind, &object)
    }
}

fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": metadata}),
    )
}

/// Starts a watch; the answer streams until timeout, a cut, shutdown or disconnect.
pub fn watch(
    state: &Arc<State>,
    req: &Req,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<hyper::Response<Body>, ApiError> {
    let send_initial = req
        .param("sendInitialEvents")
        .map(|v| v == "true" || v == "1");
    let rv_match = req.param("resourceVersionMatch").unwrap_or_default();
    if send_initial.is_some() && rv_match != "NotOlderThan" {
        let message = "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan";
        let mut e = ApiError::invalid_plain(format!(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: {message}"
        ));
        e.details = DetailsShape::Filled(Box::new(Details {
            group: Some("meta.k8s.io".into()),
            kind: Some("ListOptions".into()),
            causes: vec![Cause {
                reason: "FieldValueForbidden".into(),
                message: format!("Forbidden: {message}"),
                field: "resourceVersionMatch".into(),
            }],
            ..Details::default()
        }));
        return Err(e);
    }
    let (labels, mut fields) = selectors(req, rt)?;
    if let Some(name) = name {
        // GET .../NAME?watch=1 watches one object.
        let sel = format!("metadata.name={name}");
        fields =
            FieldSelector::parse(&sel, &rt.group, &rt.plural).map_err(ApiError::bad_request)?;
    }
    let filter = Filter {
        rt: rt.clone(),
        namespace: namespace.map(str::to_string),
        labels,
        fields,
    };
    let bookmarks = req
        .param("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = req
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let start_rv: Option<u64> = req
        .param("resourceVersion")
        .filter(|r| !r.is_empty())
        .and_then(|r| r.parse().ok());
    let encoding = if req.wants_table() {
        Encoding::Table {
            first: true,
            include: IncludeObject::parse(req.param("includeObject")),
        }
    } else if req.wants_metadata() {
        Encoding::Metadata
    } else {
        Encoding::Object
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let state = state.clone();
    let initial_events = send_initial.unwrap_or(false) || start_rv.is_none_or(|rv| rv == 0);
    tokio::spawn(run(
        state,
        filter,
        tx,
        WatchSpec {
            start_rv,
            initial_events,
            streaming_list: send_initial == Some(true),
            bookmarks,
            timeout,
        },
        encoding,
    ));
    let stream = tokio_stream_from(rx)
        .map(|chunk| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk))));
    let body = BodyExt::boxed(StreamBody::new(stream));
    hyper::Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
) -> impl futures::Stream<Item = Vec<u8>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

struct WatchSpec {
    start_rv: Option<u64>,
    initial_events: bool,
    streaming_list: bool,
    bookmarks: bool,
    timeout: Duration,
}

async fn run(
    state: Arc<State>,
    filter: Filter,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    spec: WatchSpec,
    mut encoding: Encoding,
) {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let mut wake = state.store.subscribe();
    let mut cuts = state.faults.watch_cuts();
    cuts.mark_unchanged();
    let rt = filter.rt.clone();
    // Initial state (synthetic ADDED) or the replay start point.
    let start: Result<(u64, Vec<Value>), ApiError> = {
        let inner = state.store.lock();
        if spec.initial_events {
            let objs = inner
                .range(&rt.storage_key(), filter.namespace.as_deref(), None)
                .filter(|(_, o)| filter.matches(o))
                .map(|(_, o)| served(&rt, o))
                .collect();
            Ok((inner.current_rv(), objs))
        } else {
            let rv = spec.start_rv.unwrap_or(0);
            if rv < inner.compacted_rv() {
                Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    inner.compacted_rv() + 1
                )))
            } else {
                Ok((rv, Vec::new()))
            }
        }
    };
    let (mut cursor, initial) = match start {
        Ok(s) => s,
        Err(err) => {
            let _closed = tx.send(event_line("ERROR", &err.to_value())).await;
            return;
        }
    };
    for obj in initial {
        if tx.send(encoding.encode(&rt, "ADDED", obj)).await.is_err() {
            return;
        }
    }
    if spec.streaming_list && spec.bookmarks && tx.send(bookmark(&rt, cursor, true)).await.is_err()
    {
        return;
    }
    let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_INTERVAL;
    loop {
        let (events, compacted) = {
            let inner = state.store.lock();
            (inner.events_since(cursor), inner.compacted_rv())
        };
        let Some(events) = events else {
            let err = ApiError::gone(format!(
                "too old resource version: {cursor} ({})",
                compacted + 1
            ));
            let _closed = tx.send(event_line("ERROR", &err.to_value())).await;
            return;
        };
        for e in events {
            cursor = e.rv;
            if let Some((kind, obj)) = filter.translate(&e)
                && tx.send(encoding.encode(&rt, kind, obj)).await.is_err()
            {
                return;
            }
        }
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                next_bookmark = tokio::time::Instant::now() + BOOKMARK_INTERVAL;
                if tx.send(bookmark(&rt, cursor, false)).await.is_err() {
                    return;
                }
            }
            _ = cuts.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
