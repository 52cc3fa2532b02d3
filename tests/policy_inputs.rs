//! No input can panic doctor. Every policy in `tests/corpus/policies/` is
//! validated by the real binary and must give the error its first line
//! expects (`# expect: TEXT`, or `# expect: ok`); a bounded mutation fuzzer
//! feeds thousands of broken variants of them to the parser and validator;
//! and a closed stdout ends doctor quietly.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is there");
    files
}

#[test]
fn every_policy_in_the_corpus_gets_the_error_it_expects() {
    for file in corpus() {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let out = Command::new(DOCTOR)
            .args(["policy", "validate", "--policy"])
            .arg(&file)
            .env("DOCTOR_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        if expect == "ok" {
            assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        } else {
            assert_eq!(out.status.code(), Some(3), "{name}: {stderr}");
            // file:line: key: message — the file named first.
            assert!(
                stderr.starts_with(&format!("doctor: {}:", file.display())),
                "{name}: {stderr}"
            );
            assert!(
                stderr.contains(expect),
                "{name}: expected {expect:?} in {stderr}"
            );
        }
    }
}

/// xorshift: a fixed seed, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Pieces that reach the parser's and validator's corners.
const SPLICES: &[&str] = &[
    "99999999999999999999",
    "18446744073709551615s",
    "-1",
    "0",
    "\"\"",
    "\"1e400s\"",
    "\"9999999999999GiB\"",
    "[",
    "]]",
    "=",
    "\"",
    "\n[plugins.x]\n",
    "\nevery = \"0s\"\n",
    "\nplugin_memory = \"0B\"\n",
    "\u{0}",
    "é",
    "\n[[a]]\n",
    "{",
    "}",
    ",",
    "grants.signal = { match = [\"(\"] }",
    "\nlock_wait = \"1h 1ns\"\n",
    "\"∞\"",
    "true",
    "[databases.d]\npath = \"\"\n",
];

fn mutate(seed: &str, rng: &mut Rng) -> String {
    let mut text: Vec<char> = seed.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(text.len() + 1);
        match rng.below(3) {
            0 => {
                let end = (at + rng.below(12)).min(text.len());
                text.drain(at..end);
            }
            1 => {
                let piece: Vec<char> = SPLICES[rng.below(SPLICES.len())].chars().collect();
                text.splice(at..at, piece);
            }
            _ => {
                if at < text.len() {
                    text[at] = char::from(b' ' + rng.below(95) as u8);
                }
            }
        }
    }
    text.into_iter().collect()
}

#[test]
fn thousands_of_broken_policies_never_panic_the_parser_or_validator() {
    let seeds: Vec<String> = corpus()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let mut rng = Rng(0x5eed_d0c7_0b0e_1234);
    let mut rejected = 0;
    for i in 0..4000 {
        let input = mutate(&seeds[i % seeds.len()], &mut rng);
        let outcome = std::panic::catch_unwind(|| {
            doctor::policy::Policy::parse(Path::new("fuzz.toml"), &input).map(|_| ())
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                rejected += 1;
                assert!(
                    e.to_string().starts_with("fuzz.toml:"),
                    "an error names the file: {e}"
                );
            }
            Err(_) => panic!("Policy::parse panicked on input #{i}:\n{input}"),
        }
    }
    assert!(
        rejected > 1000,
        "the mutations reach the error paths ({rejected} rejected)"
    );
}

#[test]
fn a_closed_stdout_ends_doctor_quietly() {
    let s = Scenario::new();
    // Enough findings that the report is larger than a pipe holds (64 KiB):
    // doctor is still writing when the reader goes away.
    let names: Vec<String> = (0..400).map(|i| format!("target-number-{i:03}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    s.stale_pid_policy("", "", &names);
    // Like `doctor check --format json | head -c 1`.
    let mut child = Command::new(DOCTOR)
        .args(["check", "--format", "json", "--policy"])
        .arg(s.policy_path())
        .env("DOCTOR_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        status.code(),
        Some(141),
        "ends as a SIGPIPE'd tool would, without a word: {stderr}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    // The run itself was journaled before the report was written.
    let runs: i64 = s
        .journal()
        .query_row(
            "SELECT count(*) FROM runs WHERE status = 'complete'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 1);
}

#[test]
fn validate_warns_about_capabilities_requested_but_not_granted() {
    let s = Scenario::new();
    let root = s.root().display().to_string();
    s.policy(&format!(
        "[plugins.pid-file-stop]\ngrants.processes = true\ngrants.files = [\"{root}/*.pid\"]\nconfig = {{ targets = [{{ name = \"w\", pid_file = \"{root}/w.pid\", pattern = \"^w$\" }}] }}\n"
    ));
    let out = s.doctor(&["policy", "validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("plugins.pid-file-stop: requests signal, files_remove but the policy does not grant them"), "{stderr}");
}
