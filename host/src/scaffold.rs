//! `doctor plugins new NAME`: a plugin project that builds as it is, with a
//! test that runs its `check` natively and a policy snippet that grants
//! exactly what it requests. The example plugin reports a stale lock file
//! (a file naming a pid that is not running), an incident small enough to
//! read top to bottom and real enough to keep.

use anyhow::{bail, Context as _};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

/// Where the generated project finds the SDK.
#[derive(Debug, Clone)]
pub enum SdkSource {
    Path(PathBuf),
    /// No local SDK: the author fills in the git line (see the README).
    Unknown,
}

impl SdkSource {
    /// The SDK beside this doctor's own sources, when they are on this
    /// machine (a source checkout); else the author names it.
    pub fn detect() -> SdkSource {
        let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
        match std::fs::canonicalize(beside) {
            Ok(path) if path.join("Cargo.toml").exists() => SdkSource::Path(path),
            _ => SdkSource::Unknown,
        }
    }

    fn dependency_line(&self) -> String {
        match self {
            SdkSource::Path(p) => format!("doctor-sdk = {{ path = {:?} }}", p.display().to_string()),
            SdkSource::Unknown => "# doctor-sdk = { git = \"<doctor's repository URL>\", tag = \"v<doctor version>\" }   # or a path to plugins/sdk\ndoctor-sdk = { path = \"../doctor/plugins/sdk\" }".to_string(),
        }
    }
}

/// A plugin name: what `describe()` says and the `.wasm` file stem.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        bail!("plugin name {name:?}: use lowercase letters, digits and single hyphens, starting with a letter (e.g. stale-locks)");
    }
    Ok(())
}

/// Write the project into `dir` (which must not exist, or be empty); the
/// files written, relative to `dir`.
pub fn create(name: &str, lang: Lang, dir: &Path, sdk: &SdkSource) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty; choose another --dir",
            dir.display()
        );
    }
    let files = match lang {
        Lang::Rust => rust_files(name, sdk),
        Lang::Python => python_files(name),
    };
    for (relative, text) in &files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.into_iter().map(|(p, _)| PathBuf::from(p)).collect())
}

fn snake(name: &str) -> String {
    name.replace('-', "_")
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
        .collect()
}

fn rust_files(name: &str, sdk: &SdkSource) -> Vec<(String, String)> {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = "s"
strip = true

# Not part of any enclosing workspace.
[workspace]
"#,
        sdk = sdk.dependency_line()
    );
    let lib = format!(
        r##"//! {name}: reports a lock file that names a process which is not running,
//! and proposes to remove it.

use doctor_sdk::prelude::*;

doctor_sdk::config! {{
    #[derive(serde::Deserialize)]
    struct Config {{
        /// the lock file to watch
        lock_file: String,
    }}
}}

struct {camel};

impl Plugin for {camel} {{
    type Config = Config;

    fn info() -> Info {{
        Info::new("{name}", "Reports a lock file whose pid is not running")
            .capabilities(&[caps::FILES, caps::PROCESSES, caps::FILES_REMOVE])
            .config::<Config>()
    }}

    fn check(config: Config) -> Result<Vec<Finding>, Error> {{
        let text = match files::read(&config.lock_file, 64) {{
            Ok(text) => text,
            Err(Error::NotFound(_)) => return Ok(vec![]),
            Err(e) => return Err(e),
        }};
        let pid: u32 = text.trim().parse().unwrap_or(0);
        if processes::get(pid)?.is_some() {{
            return Ok(vec![]);
        }}
        let message = format!("{{}} names pid {{pid}}, which is not running", config.lock_file);
        Ok(vec![Finding::warning("stale-lock", &config.lock_file, message)
            .evidence("pid", pid)
            .action(Action::remove_file(&config.lock_file), "remove the stale lock file")])
    }}
}}

register_plugin!({camel});

/// `check` runs natively against facts the test supplies: `cargo test`.
#[cfg(test)]
mod tests {{
    use super::{camel};
    use doctor_sdk::testing::Facts;

    const CONFIG: &str = r#"{{ "lock_file": "/run/app.lock" }}"#;

    #[test]
    fn a_lock_naming_no_process_is_stale() {{
        let out = Facts::new().file("/run/app.lock", "424242\n").processes(vec![]).run::<{camel}>(CONFIG);
        assert_eq!(out.keys(), ["stale-lock"]);
        assert_eq!(out.findings()[0].actions.len(), 1, "its removal is planned");
    }}

    #[test]
    fn no_lock_file_is_no_finding() {{
        let out = Facts::new().processes(vec![]).run::<{camel}>(CONFIG);
        assert!(out.keys().is_empty());
    }}
}}
"##,
        camel = camel(name)
    );
    let policy = policy_snippet(name);
    let readme = format!(
        r#"# {name}

A doctor plugin. Build, test, install:

```sh
rustup target add wasm32-wasip2
cargo test                                           # check() natively, no host
cargo build --release --target wasm32-wasip2
install -D -m 0644 target/wasm32-wasip2/release/{snake}.wasm /etc/doctor/plugins/{name}.wasm
```

Then merge `policy.toml` into your policy (it grants exactly what the
plugin requests), point `lock_file` at your lock file, and run
`doctor plugins inspect /etc/doctor/plugins/{name}.wasm --policy /etc/doctor/policy.toml`
and `doctor check`.
"#,
        snake = snake(name)
    );
    vec![
        ("Cargo.toml".into(), cargo),
        ("src/lib.rs".into(), lib),
        ("policy.toml".into(), policy),
        ("README.md".into(), readme),
    ]
}

fn policy_snippet(name: &str) -> String {
    format!(
        r#"# Grants exactly what {name} requests; merge into your policy.
[doctor]
plugin_dirs = ["/etc/doctor/plugins"]

[plugins.{name}]
every = "5m"
grants.processes = true
grants.files = ["/run/app.lock"]
grants.files_remove = ["/run/app.lock"]
config = {{ lock_file = "/run/app.lock" }}
"#
    )
}

fn python_files(name: &str) -> Vec<(String, String)> {
    // The shipped Python plugin (plugins/python/stale-lock) is the template.
    let rename = |text: &str| {
        text.replace("stale-lock", name)
            .replace("StaleLock", &camel(name))
    };
    let build = format!(
        r#"#!/bin/sh
# Build {name}.wasm with componentize-py (pip install componentize-py==0.25.1).
set -e
cd "$(dirname "$0")"
componentize-py -d wit -w plugin componentize app -o {name}.wasm
"#
    );
    let policy = policy_snippet(name).replace(
        r#"config = { lock_file = "/run/app.lock" }"#,
        r#"config = { lock_files = ["/run/app.lock"] }"#,
    );
    vec![
        ("app.py".into(), rename(PYTHON_APP)),
        ("test_app.py".into(), rename(PYTHON_TEST)),
        ("doctor_sdk.py".into(), PYTHON_SDK.to_string()),
        ("build.sh".into(), build),
        ("wit/plugin.wit".into(), WIT.to_string()),
        ("policy.toml".into(), policy),
    ]
}

/// The contract the Python scaffold builds against (the Python SDK speaks
/// 0.2.0, which the host keeps linking), and the Python SDK module.
const WIT: &str = include_str!("../../wit/0.2.0/plugin.wit");
const PYTHON_SDK: &str = include_str!("../../plugins/python/doctor_sdk.py");
const PYTHON_APP: &str = include_str!("../../plugins/python/stale-lock/app.py");
const PYTHON_TEST: &str = include_str!("../../plugins/python/stale-lock/test_app.py");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_written() {
        assert!(check_name("stale-locks").is_ok());
        for bad in ["", "Stale", "1x", "a_b", "a--b", "a-", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(create(
            "Bad Name",
            Lang::Rust,
            &dir.path().join("p"),
            &SdkSource::Unknown
        )
        .is_err());
        assert!(!dir.path().join("p").exists());
    }

    #[test]
    fn a_non_empty_directory_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        assert!(create("x", Lang::Rust, dir.path(), &SdkSource::Unknown).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }
}
