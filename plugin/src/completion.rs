//! Completion of `kubectl vc <TAB>` through kubectl's own shell completion.
//!
//! kubectl (1.26+) completes a plugin's arguments by running `kubectl_complete-vc ARGS...
//! WORD` from PATH and reading cobra's protocol: one candidate per line (`value<TAB>help`),
//! then `:DIRECTIVE`. A two-line script `kubectl_complete-vc` that runs
//! `kubectl-vc __complete "$@"` connects the two; this module decides the candidates from
//! the clap definition, so completion never drifts from the real flags.

use clap::Command;

/// cobra's `ShellCompDirectiveNoFileComp`: do not fall back to file names.
pub const NO_FILE_COMPLETION: u8 = 4;

/// What to offer for the word being completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Candidates {
    /// Fixed words with their help text (subcommands, flags, enum values).
    Words(Vec<(String, String)>),
    /// Names of VirtualClusters in the namespace the other arguments select.
    VirtualClusterNames,
}

/// Decides the candidates for `word`, the last argument, after `args` (the words before it,
/// without the program name).
pub fn candidates(root: &Command, args: &[String], word: &str) -> Candidates {
    let mut command = root;
    let mut positionals = 0usize;
    let mut skip_value = false;
    for arg in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        if let Some(flag) = arg.strip_prefix("--") {
            skip_value = !flag.contains('=')
                && takes_value(command, root, |candidate| {
                    candidate.get_long() == Some(flag)
                });
            continue;
        }
        if let Some(short) = arg.strip_prefix('-').and_then(|flag| flag.chars().next()) {
            skip_value = arg.len() == 2
                && takes_value(command, root, |candidate| {
                    candidate.get_short() == Some(short)
                });
            continue;
        }
        match command.find_subcommand(arg) {
            Some(sub) if positionals == 0 => command = sub,
            _ => positionals += 1,
        }
    }
    if word.starts_with('-') {
        return Candidates::Words(flags(command, root, word));
    }
    if command.has_subcommands() && positionals == 0 {
        let words = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set() && sub.get_name().starts_with(word))
            .map(|sub| (sub.get_name().to_owned(), about(sub)))
            .collect();
        return Candidates::Words(words);
    }
    let first_positional_is_name = command.get_positionals().next().is_some_and(|arg| {
        arg.get_value_names()
            .is_some_and(|names| names.iter().any(|name| name == "NAME"))
    });
    let takes_many_names = command.get_positionals().next().is_some_and(|arg| {
        arg.get_num_args()
            .is_some_and(|range| range.max_values() > 1)
    });
    if first_positional_is_name && (positionals == 0 || takes_many_names) {
        return Candidates::VirtualClusterNames;
    }
    Candidates::Words(Vec::new())
}

fn about(command: &Command) -> String {
    command
        .get_about()
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn takes_value(command: &Command, root: &Command, matches: impl Fn(&clap::Arg) -> bool) -> bool {
    command
        .get_arguments()
        .chain(root.get_arguments())
        .find(|candidate| matches(candidate))
        .is_some_and(|candidate| {
            candidate.get_action().takes_values()
                && candidate
                    .get_num_args()
                    .is_none_or(|range| range.min_values() > 0)
        })
}

fn flags(command: &Command, root: &Command, word: &str) -> Vec<(String, String)> {
    let mut words: Vec<(String, String)> = command
        .get_arguments()
        .chain(root.get_arguments().filter(|arg| arg.is_global_set()))
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            Some((
                format!("--{long}"),
                arg.get_help().map(ToString::to_string).unwrap_or_default(),
            ))
        })
        .filter(|(flag, _)| flag.starts_with(word))
        .collect();
    words.sort();
    words.dedup_by(|a, b| a.0 == b.0);
    words
}

/// `--kubeconfig`, `--context` and `-n/--namespace` among the words typed so far, so names
/// are listed from the cluster and namespace the finished command will use.
pub fn global_flags(args: &[String]) -> crate::cli::GlobalArgs {
    let mut global = crate::cli::GlobalArgs::default();
    let mut words = args.iter();
    while let Some(arg) = words.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let slot = match flag {
            "--kubeconfig" => 0,
            "--context" => 1,
            "-n" | "--namespace" => 2,
            _ => continue,
        };
        let Some(value) = inline.or_else(|| words.next().cloned()) else {
            break;
        };
        match slot {
            0 => global.kubeconfig = Some(value.into()),
            1 => global.context = Some(value),
            _ => global.namespace = Some(value),
        }
    }
    global
}

/// Formats candidates in cobra's protocol.
pub fn render(words: &[(String, String)]) -> String {
    let mut text = String::new();
    for (word, help) in words {
        let help = help.lines().next().unwrap_or_default();
        if help.is_empty() {
            text.push_str(&format!("{word}\n"));
        } else {
            text.push_str(&format!("{word}\t{help}\n"));
        }
    }
    text.push_str(&format!(":{NO_FILE_COMPLETION}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn complete(line: &[&str]) -> Candidates {
        let (word, args) = line.split_last().unwrap();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        candidates(&Cli::command(), &args, word)
    }

    fn words(candidates: Candidates) -> Vec<String> {
        match candidates {
            Candidates::Words(words) => words.into_iter().map(|(word, _)| word).collect(),
            Candidates::VirtualClusterNames => vec!["<names>".into()],
        }
    }

    #[test]
    fn subcommands_complete_by_prefix() {
        assert_eq!(words(complete(&["de"])), ["describe", "delete"]);
        assert_eq!(words(complete(&["nodes", ""])), ["add", "remove"]);
    }

    #[test]
    fn names_complete_where_a_virtual_cluster_is_named() {
        assert_eq!(complete(&["describe", ""]), Candidates::VirtualClusterNames);
        assert_eq!(
            complete(&["-n", "team-a", "use-context", "p"]),
            Candidates::VirtualClusterNames
        );
        assert_eq!(
            complete(&["delete", "a", ""]),
            Candidates::VirtualClusterNames
        );
        assert_eq!(
            complete(&["nodes", "add", ""]),
            Candidates::VirtualClusterNames
        );
        assert_eq!(
            complete(&["describe", "a", ""]),
            Candidates::Words(Vec::new())
        );
    }

    #[test]
    fn flags_include_the_global_ones() {
        let flags = words(complete(&["create", "--d"]));
        assert_eq!(flags, ["--dry-run"]);
        let flags = words(complete(&["list", "--"]));
        assert!(
            flags.contains(&"--all-namespaces".to_owned())
                && flags.contains(&"--kubeconfig".to_owned()),
            "{flags:?}"
        );
    }

    #[test]
    fn a_flag_value_is_not_taken_for_a_subcommand() {
        assert_eq!(
            complete(&["--context", "describe", "desc"]),
            Candidates::Words(vec![("describe".into(), about_of("describe"))])
        );
    }

    fn about_of(name: &str) -> String {
        about(Cli::command().find_subcommand(name).unwrap())
    }

    #[test]
    fn global_flags_are_found_in_both_spellings() {
        let args: Vec<String> = [
            "--context=c",
            "describe",
            "-n",
            "team-a",
            "--kubeconfig",
            "/k",
        ]
        .map(String::from)
        .to_vec();
        let global = global_flags(&args);
        assert_eq!(global.context.as_deref(), Some("c"));
        assert_eq!(global.namespace.as_deref(), Some("team-a"));
        assert_eq!(global.kubeconfig, Some("/k".into()));
    }

    #[test]
    fn rendering_follows_cobra() {
        assert_eq!(
            render(&[
                ("a".into(), "help\nmore".into()),
                ("b".into(), String::new())
            ]),
            "a\thelp\nb\n:4\n"
        );
    }
}
