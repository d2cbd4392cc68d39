//! `setns(2)`: moving the calling thread into a network namespace.
#![expect(unsafe_code, reason = "FFI to setns")]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into the network namespace `ns` refers to.
///
/// # Errors
///
/// `setns`'s error (EPERM without CAP_SYS_ADMIN).
pub fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open namespace file for the duration of the call;
    // setns only changes the calling thread's namespace.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
