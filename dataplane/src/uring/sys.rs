//! The unsafe half of the io_uring backend: the ring, its provided-buffer
//! ring, and the submissions that point into memory the kernel uses until
//! their completion.
//!
//! Ownership rule the types enforce: buffer `bid` belongs either to the
//! kernel (in the buffer ring, or under an in-flight send of that buffer)
//! or to the worker between a receive completion and [`Ring::send`] /
//! [`Ring::provide`]. Everything the kernel points at (`bufs`, `sends`,
//! `recv_hdr`, the buffer ring) is boxed, never reallocated, and freed only
//! after the ring is closed.
#![expect(
    unsafe_code,
    reason = "io_uring submissions and the provided-buffer ring"
)]

use std::alloc::{self, Layout};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::udp::sys::{BUF_LEN, from_sockaddr, to_sockaddr};

/// Buffer group id of the provided buffers.
const BGID: u16 = 0;

/// What a send needs to stay alive until its completion.
struct SendCtx {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

/// An io_uring with `entries` provided receive buffers of [`BUF_LEN`].
pub struct Ring {
    uring: IoUring,
    ring_mem: *mut BufRingEntry,
    ring_layout: Layout,
    entries: u16,
    tail: u16,
    bufs: Box<[[u8; BUF_LEN]]>,
    sends: Box<[SendCtx]>,
    recv_hdr: Box<libc::msghdr>,
}

impl Ring {
    /// A ring with `SINGLE_ISSUER` and `DEFER_TASKRUN`, and `entries`
    /// (a power of two ≤ 32768) provided buffers, all given to the kernel.
    ///
    /// # Errors
    ///
    /// The kernel's refusal (no io_uring, no buffer rings, too old for the
    /// setup flags).
    pub fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "entries"));
        }
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(u32::from(entries) * 2)?;
        let size = usize::from(entries) * mem::size_of::<BufRingEntry>();
        let ring_layout = Layout::from_size_align(size, 4096)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "layout"))?;
        // SAFETY: the layout has a non-zero size (entries ≥ 1).
        let ring_mem = unsafe { alloc::alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        if ring_mem.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        // SAFETY: all-zero is valid for these C structs.
        let zero_ctx = || unsafe { mem::zeroed::<SendCtx>() };
        // SAFETY: all-zero is valid for msghdr.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        recv_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let mut ring = Self {
            uring,
            ring_mem,
            ring_layout,
            entries,
            tail: 0,
            bufs: vec![[0u8; BUF_LEN]; usize::from(entries)].into_boxed_slice(),
            sends: (0..entries).map(|_| zero_ctx()).collect(),
            recv_hdr,
        };
        // SAFETY: ring_mem is page aligned, zeroed, `entries` long, and
        // lives until Drop, which unregisters it before freeing it.
        unsafe {
            ring.uring.submitter().register_buf_ring_with_flags(
                ring_mem as u64,
                entries,
                BGID,
                0,
            )?;
        }
        for bid in 0..entries {
            ring.provide(bid);
        }
        Ok(ring)
    }

    /// Gives buffer `bid` (back) to the kernel for receiving.
    pub fn provide(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let addr = self.bufs[usize::from(bid)].as_mut_ptr() as u64;
        // SAFETY: the index is masked into the ring; the entry is ours to
        // write until the tail is published below.
        let entry = unsafe { &mut *self.ring_mem.add(usize::from(self.tail & mask)) };
        entry.set_addr(addr);
        entry.set_len(BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives in the first entry of the ring we
        // allocated; the kernel reads it, so publish with release ordering.
        unsafe {
            let tail = BufRingEntry::tail(self.ring_mem).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Starts a multishot `recvmsg` on `fd` using the provided buffers.
    pub fn arm_recv(&mut self, fd: BorrowedFd<'_>, user_data: u64) -> io::Result<()> {
        let sqe = opcode::RecvMsgMulti::new(Fd(fd.as_raw_fd()), &*self.recv_hdr, BGID)
            .build()
            .user_data(user_data);
        self.push(&sqe)
    }

    /// Sends `range` of buffer `bid` from `fd` to `dst`. The buffer stays
    /// the kernel's until the completion with `user_data` arrives.
    pub fn send(
        &mut self,
        fd: BorrowedFd<'_>,
        bid: u16,
        range: Range<usize>,
        dst: SocketAddr,
        user_data: u64,
    ) -> io::Result<()> {
        let i = usize::from(bid);
        let (addr, len) = to_sockaddr(dst);
        let payload = &mut self.bufs[i][range];
        let ctx = &mut self.sends[i];
        ctx.addr = addr;
        ctx.iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        ctx.hdr.msg_name = ptr::from_mut(&mut ctx.addr).cast();
        ctx.hdr.msg_namelen = len;
        ctx.hdr.msg_iov = ptr::from_mut(&mut ctx.iov);
        ctx.hdr.msg_iovlen = 1;
        let sqe = opcode::SendMsg::new(Fd(fd.as_raw_fd()), &ctx.hdr)
            .build()
            .user_data(user_data);
        self.push(&sqe)
    }

    /// Cancels the operation submitted with `user_data`.
    pub fn cancel(&mut self, user_data: u64) -> io::Result<()> {
        let sqe = opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(u64::MAX);
        self.push(&sqe)
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.uring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Moves the completions into `out` as `(user_data, result, flags)`.
    pub fn completions(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        out.clear();
        out.extend(
            self.uring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
    }

    /// The sender and the payload range of a receive completion of `len`
    /// octets in buffer `bid`.
    pub fn received(&self, bid: u16, len: usize) -> Option<(SocketAddr, Range<usize>)> {
        let buf = self.bufs.get(usize::from(bid))?.get(..len)?;
        let out = RecvMsgOut::parse(buf, &self.recv_hdr).ok()?;
        let name = out.name_data();
        // SAFETY: all-zero is valid for sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let n = name.len().min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: copies at most size_of(sockaddr_storage) octets into it.
        unsafe {
            ptr::copy_nonoverlapping(name.as_ptr(), ptr::from_mut(&mut storage).cast::<u8>(), n);
        }
        let src = from_sockaddr(&storage)?;
        let payload = out.payload_data();
        let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let end = if out.is_payload_truncated() {
            // Larger than the buffer: report it whole so it counts as oversized.
            BUF_LEN
        } else {
            start + payload.len()
        };
        Some((src, start..end.min(BUF_LEN)))
    }

    /// Buffer `bid`, between its receive completion and its send or return.
    pub fn buf_mut(&mut self, bid: u16) -> &mut [u8; BUF_LEN] {
        &mut self.bufs[usize::from(bid)]
    }

    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: every pointer in the entries built above refers to
            // boxed memory of this Ring (recv_hdr, sends[bid], bufs[bid]) or
            // to a socket the worker keeps open until the cancellation
            // completes; none is freed or reused before the completion.
            if unsafe { self.uring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.uring.submit()?;
        }
        Err(io::Error::other("submission queue full"))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = self.uring.submitter().unregister_buf_ring(BGID);
        // SAFETY: allocated in `new` with this layout; unregistered above,
        // so the kernel no longer reads it.
        unsafe { alloc::dealloc(self.ring_mem.cast(), self.ring_layout) };
    }
}

/// Whether a completion's multishot receive goes on.
pub fn more(flags: u32) -> bool {
    cqueue::more(flags)
}

/// The provided buffer a completion used.
pub fn buffer_id(flags: u32) -> Option<u16> {
    cqueue::buffer_select(flags)
}
