//! Which plugins exist: the built-ins embedded in the binary, and the `.wasm`
//! components in the policy's plugin directories (named by file stem).

use std::path::{Path, PathBuf};

mod builtin {
    /// One built-in plugin, as `build.rs` embeds it.
    pub struct Builtin {
        pub name: &'static str,
        /// The component.
        pub wasm: &'static [u8],
        /// The component's sha256 (hex), computed at build time.
        pub sha256: &'static str,
        /// The component compiled at build time, for doctor's engine
        /// configuration and a portable CPU baseline; empty when the build
        /// could not (the built-in is then compiled at run time).
        pub native: &'static [u8],
    }

    /// Native code starts on a page of its own, and its text (at a page
    /// offset in it) with it: a worker makes those pages executable where
    /// they lie (`runtime::in_place`).
    #[repr(C, align(4096))]
    pub struct PageAligned<T: ?Sized>(pub T);

    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));
}

fn builtin(name: &str) -> Option<&'static builtin::Builtin> {
    builtin::BUILTIN.iter().find(|b| b.name == name)
}

/// Whether `at` lies in a built-in's native code.
pub fn is_precompiled_code(at: *const u8) -> bool {
    builtin::BUILTIN
        .iter()
        .any(|b| b.native.as_ptr_range().contains(&at))
}

/// A built-in's native code, compiled when doctor was built (for a worker,
/// which is this same binary).
pub fn precompiled(name: &str) -> Option<&'static [u8]> {
    builtin(name)
        .map(|b| b.native)
        .filter(|native| !native.is_empty())
}

#[derive(Debug, Clone)]
pub enum Source {
    Builtin,
    File(PathBuf),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Builtin => "built-in".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub source: Source,
}

pub struct Catalog {
    pub entries: Vec<Entry>,
}

impl Catalog {
    /// Built-ins first; a plugin file with a built-in's name is refused, so a
    /// dropped-in file can never shadow a built-in.
    pub fn discover(plugin_dirs: &[PathBuf]) -> (Catalog, Vec<String>) {
        let mut entries: Vec<Entry> = builtin::BUILTIN
            .iter()
            .map(|b| Entry {
                name: b.name.to_string(),
                source: Source::Builtin,
            })
            .collect();
        let mut warnings = Vec::new();
        for dir in plugin_dirs {
            let Ok(read) = std::fs::read_dir(dir) else {
                warnings.push(format!("plugin directory {} cannot be read", dir.display()));
                continue;
            };
            let mut files: Vec<PathBuf> = read
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
                .collect();
            files.sort();
            for path in files {
                let name = path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if entries.iter().any(|e| e.name == name) {
                    warnings.push(format!(
                        "{} ignored: a plugin named {name} is already known",
                        path.display()
                    ));
                    continue;
                }
                entries.push(Entry {
                    name,
                    source: Source::File(path),
                });
            }
        }
        (Catalog { entries }, warnings)
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

impl Entry {
    pub fn bytes(&self) -> std::io::Result<std::borrow::Cow<'static, [u8]>> {
        match &self.source {
            Source::Builtin => builtin(&self.name)
                .map(|b| std::borrow::Cow::Borrowed(b.wasm))
                .ok_or_else(|| std::io::Error::other("built-in missing")),
            Source::File(path) => read(path).map(std::borrow::Cow::Owned),
        }
    }

    /// The sha256 of [`Entry::bytes`]: a built-in's was computed when
    /// doctor was built.
    pub fn sha256(&self, bytes: &[u8]) -> String {
        match (&self.source, builtin(&self.name)) {
            (Source::Builtin, Some(b)) => b.sha256.to_string(),
            _ => {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(bytes))
            }
        }
    }

    /// Whether a worker can load this plugin's code precompiled into doctor.
    pub fn is_precompiled(&self) -> bool {
        matches!(self.source, Source::Builtin) && precompiled(&self.name).is_some()
    }
}

/// The largest plugin file doctor reads: a Python component (which carries
/// its interpreter) is about 20 MB.
const MAX_PLUGIN_BYTES: u64 = 128 << 20;

/// A plugin file: a regular file (no symlink, no FIFO to block on), of a
/// size worth compiling.
fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let refuse = |why: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    if !meta.is_file() {
        return refuse(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_PLUGIN_BYTES {
        return refuse(format!(
            "{} is {} bytes, more than a plugin may be ({MAX_PLUGIN_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref()
        .take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}
