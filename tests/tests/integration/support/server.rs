//! A started test API server and a client of it, for tests that need nothing more.

use kube::Client;
use vc_test_apiserver::{TestApiServer, TestApiServerOptions};

/// The server stops when the first value is dropped, so keep it for the test's length.
pub async fn server() -> (TestApiServer, Client) {
    let server = TestApiServer::start(TestApiServerOptions::default()).unwrap();
    let client = server.client().await.unwrap();
    (server, client)
}
