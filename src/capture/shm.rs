//! The one place with `unsafe`: mapping a shared-memory segment that the X
//! server writes screen images into (MIT-SHM 1.2, passed as a memfd).

use std::os::fd::{AsFd, OwnedFd};

/// A read-only shared mapping of a memfd of `len` bytes.
pub struct ShmMapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain memory owned by this struct; it is only read
// through `bytes()`, which borrows `self`, so moving it across threads is fine.
unsafe impl Send for ShmMapping {}

impl ShmMapping {
    /// Create a memfd of `len` bytes and map it read-only.
    pub fn new(len: usize) -> std::io::Result<ShmMapping> {
        use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        let fd = memfd_create("ticketvnc-capture", MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, len as u64)?;
        // SAFETY: we map a fresh memfd we own, of exactly `len` bytes (just
        // truncated to that size), shared and read-only, at an address the
        // kernel chooses. The mapping is unmapped in Drop and never aliased
        // mutably on our side; the X server writes into it only while we
        // wait for its GetImage reply, before we read.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        Ok(ShmMapping { ptr, len, fd })
    }

    /// A new descriptor for the same memory, to hand to the X server.
    pub fn dup_fd(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?)
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until Drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mapped in `new`, once.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}
