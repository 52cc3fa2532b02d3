//! A built-in's native code run where it lies: in doctor's binary, on
//! page-aligned read-only pages the kernel shares from the page cache.
//! wasmtime's own loader copies code into fresh pages before making them
//! executable (a copy and a page fault per 4 KiB, about 0.8 ms a MiB, in
//! every worker of every run); a worker instead asks wasmtime to use the
//! embedded bytes as they are, and this code memory makes their text
//! executable with `mprotect`, as wasmtime does for its own copies.
//!
//! Only where the pages are 4 KiB (the alignment `build.rs` gives the
//! embedded code) and the instruction cache needs no flush after a write
//! (x86-64): elsewhere the engine keeps wasmtime's own code memory.

use std::sync::Arc;
use wasmtime::CustomCodeMemory;

/// The page size the embedded code is aligned to.
pub const PAGE: usize = 4096;

/// The code memory a worker's engine uses, where running in place works.
pub fn code_memory() -> Option<Arc<dyn CustomCodeMemory>> {
    let works = cfg!(all(target_arch = "x86_64", target_os = "linux")) && page_size() == PAGE;
    works.then(|| Arc::new(InPlace) as Arc<dyn CustomCodeMemory>)
}

fn page_size() -> usize {
    // SAFETY: sysconf with a constant name.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0)
}

/// Text made executable (and back) by `mprotect`, whoever owns its pages.
struct InPlace;

impl CustomCodeMemory for InPlace {
    fn required_alignment(&self) -> usize {
        PAGE
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        protect(ptr, len, libc::PROT_READ | libc::PROT_EXEC)
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        // The binary's own pages stay read-only and executable: they are
        // never written, and another load of the same code may run them.
        if crate::catalog::is_precompiled_code(ptr) {
            return Ok(());
        }
        protect(ptr, len, libc::PROT_READ | libc::PROT_WRITE)
    }
}

fn protect(ptr: *const u8, len: usize, protection: i32) -> wasmtime::Result<()> {
    // SAFETY: wasmtime hands page-aligned text it owns or was given to run
    // in place; changing its protection is what publishing means.
    let rc = unsafe { libc::mprotect(ptr as *mut libc::c_void, len, protection) };
    if rc != 0 {
        wasmtime::bail!("mprotect: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
