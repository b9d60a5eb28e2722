//! Broken configurations pushed by a script: random mutations of conf/payedge.yaml (lines
//! deleted, duplicated, swapped, cut short; bytes replaced by YAML punctuation, anchors and
//! aliases) never panic the validator, and every problem it reports names the file and, when it
//! names a line, a line inside the file. `PROPTEST_CASES=100000 cargo test --test
//! config_properties` runs a longer campaign.

use std::path::{Path, PathBuf};

use payedge::config::validate_text;
use proptest::prelude::*;

fn sample() -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/payedge.yaml");
    let text = std::fs::read_to_string(&path).expect("conf/payedge.yaml");
    (path, text)
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
    Replace { at: usize, with: String },
    Indent { line: usize, by: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = proptest::collection::vec(
        prop::sample::select(vec![
            ":", "-", "[", "]", "{", "}", "&a", "*a", "!!", "|", ">", "'", "\"", "#", "\n", " ",
            "\t", "0", "-1", "1e999", "null", "~", "true", "ü", "\u{feff}", "<<: *a", "%",
        ]),
        1..6,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), junk).prop_map(|(at, with)| Mutation::Replace { at, with }),
        (any::<usize>(), 1usize..6).prop_map(|(line, by)| Mutation::Indent { line, by }),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // A truncation can leave nothing: no line to delete, copy, swap or indent.
    if lines.is_empty() && !matches!(mutation, Mutation::Replace { .. }) {
        return text.to_owned();
    }
    let n = lines.len().max(1);
    match mutation {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let line = lines[i % n].clone();
            lines.insert(i % n, line);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::Truncate(at) => {
            let cut = text
                .char_indices()
                .map(|(i, _)| i)
                .nth(at % text.len().max(1));
            return text[..cut.unwrap_or(text.len())].to_owned();
        }
        Mutation::Replace { at, with } => {
            let i = text
                .char_indices()
                .map(|(i, _)| i)
                .nth(at % text.len().max(1))
                .unwrap_or(0);
            return format!("{}{with}{}", &text[..i], &text[i..]);
        }
        Mutation::Indent { line, by } => {
            let i = line % n;
            lines[i] = format!("{}{}", " ".repeat(*by), lines[i]);
        }
    }
    lines.join("\n")
}

proptest! {

    #[test]
    fn a_mutated_configuration_is_refused_or_accepted_never_a_panic(
        mutations in proptest::collection::vec(mutation(), 1..4)
    ) {
        let (path, original) = sample();
        let text = mutations.iter().fold(original, |text, m| apply(&text, m));
        let line_count = text.lines().count() + 1;
        if let Err(errors) = validate_text(&path, &text, &|_| None) {
            prop_assert_eq!(&errors.file, &path);
            prop_assert!(!errors.issues.is_empty());
            for issue in &errors.issues {
                prop_assert!(!issue.message.is_empty());
                if let Some(line) = issue.line {
                    prop_assert!(line >= 1 && line <= line_count, "line {} of {}", line, line_count);
                }
            }
        }
    }
}

#[test]
fn the_unmutated_sample_only_misses_its_secrets() {
    // The baseline the mutations start from: valid but for the secrets it reads from the
    // environment, so a mutation's refusal is about the mutation, not the sample.
    let (path, text) = sample();
    let errors = validate_text(&path, &text, &|_| None).err();
    for issue in errors.iter().flat_map(|e| &e.issues) {
        assert!(
            issue.message.contains("env") || issue.message.contains("secret"),
            "{issue:?}"
        );
    }
}
