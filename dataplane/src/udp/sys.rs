//! The only unsafe code of the crate: thin wrappers over `socket`,
//! `setsockopt`, `bind`, `recvmmsg`, `sendmmsg` and `epoll`. Each wrapper
//! owns its file descriptors (`OwnedFd`) and its buffers for the duration
//! of the call, so nothing the kernel writes outlives what it points into.
#![expect(
    unsafe_code,
    reason = "FFI to the socket, recvmmsg/sendmmsg and epoll syscalls"
)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

/// Receive buffer size: larger than any payload the relay accepts, so a
/// truncated datagram is always seen as oversized.
pub const BUF_LEN: usize = 2048;

/// Most datagrams moved per `recvmmsg` / `sendmmsg` call.
pub const MAX_BATCH: usize = 32;

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT` (and
/// `IPV6_V6ONLY` for IPv6).
///
/// # Errors
///
/// The failing syscall's error.
pub fn bind_udp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid descriptor we just created and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        set_int_opt(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the
    // socket's family; the kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::from_ref(&storage).cast::<libc::sockaddr>(),
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn set_int_opt(fd: &OwnedFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its size is passed; the kernel
    // only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast::<libc::c_void>(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives up to `bufs.len()` (at most [`MAX_BATCH`]) datagrams without
/// blocking, appending `(length, sender)` for each to `out` in buffer order.
/// A would-block is not an error: `out` is simply left empty.
///
/// # Errors
///
/// Any other `recvmmsg` error.
pub fn recv_batch(
    fd: BorrowedFd<'_>,
    bufs: &mut [[u8; BUF_LEN]],
    out: &mut Vec<(usize, SocketAddr)>,
) -> io::Result<()> {
    out.clear();
    let n = bufs.len().min(MAX_BATCH);
    // SAFETY: these are plain C structs for which all-zero is valid.
    let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: BUF_LEN,
        };
        hdrs[i].msg_hdr.msg_name = ptr::from_mut(&mut addrs[i]).cast();
        hdrs[i].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdrs[i].msg_hdr.msg_iov = ptr::from_mut(&mut iovs[i]);
        hdrs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at a live address slot and a live iovec
    // over a buffer of BUF_LEN bytes, all borrowed mutably for this call
    // and not moved; `n` headers are initialised.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        };
    }
    for i in 0..r as usize {
        let len = (hdrs[i].msg_len as usize).min(BUF_LEN);
        if let Some(src) = from_sockaddr(&addrs[i]) {
            out.push((len, src));
        }
    }
    Ok(())
}

/// Sends each `(payload, destination)` from one socket, in batches of
/// [`MAX_BATCH`]. Returns how many were sent; on a full socket buffer the
/// rest are not sent (the caller counts them).
///
/// # Errors
///
/// A `sendmmsg` error other than would-block on the first datagram.
pub fn send_batch(fd: BorrowedFd<'_>, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < msgs.len() {
        let chunk = &msgs[sent..msgs.len().min(sent + MAX_BATCH)];
        // SAFETY: plain C structs for which all-zero is valid.
        let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
        for (i, (payload, dst)) in chunk.iter().enumerate() {
            let (storage, len) = to_sockaddr(*dst);
            addrs[i] = storage;
            // The kernel only reads from iov_base on send.
            iovs[i] = libc::iovec {
                iov_base: payload.as_ptr().cast_mut().cast(),
                iov_len: payload.len(),
            };
            hdrs[i].msg_hdr.msg_name = ptr::from_mut(&mut addrs[i]).cast();
            hdrs[i].msg_hdr.msg_namelen = len;
            hdrs[i].msg_hdr.msg_iov = ptr::from_mut(&mut iovs[i]);
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `chunk.len()` headers point at live addresses and iovecs
        // over payloads borrowed for the duration of the call; sendmmsg
        // only reads them (and writes msg_len into our headers).
        let r = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(sent),
                // An unreachable peer (ICMP) fails only that datagram: skip it.
                io::ErrorKind::ConnectionRefused => {
                    sent += 1;
                    continue;
                }
                _ if sent > 0 => Ok(sent),
                _ => Err(e),
            };
        }
        sent += r as usize;
    }
    Ok(sent)
}

/// An `eventfd` that wakes a worker blocked in `epoll_wait` when a control
/// command is queued for it (watch [`Waker::fd`] in the worker's epoll set).
#[derive(Debug)]
pub struct Waker(OwnedFd);

impl Waker {
    /// A new non-blocking eventfd.
    ///
    /// # Errors
    ///
    /// `eventfd`'s error.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor we just created and own alone.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// The descriptor to watch for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Makes the descriptor readable (a full counter also leaves it
    /// readable, so the error is of no interest).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 octets from a live u64 to a descriptor we own.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears the descriptor's readability.
    pub fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 octets into a live u64; non-blocking.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&raw mut n).cast(), 8) };
    }
}

/// An epoll instance reporting readable descriptors by token.
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance.
    ///
    /// # Errors
    ///
    /// `epoll_create1`'s error.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor we just created and own alone.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Watches `fd` for readability, reported as `token`.
    ///
    /// # Errors
    ///
    /// `epoll_ctl`'s error.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are live; `ev` is a valid event the
        // kernel reads.
        let r = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    ///
    /// # Errors
    ///
    /// `epoll_ctl`'s error.
    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are live; DEL ignores the event pointer.
        let r = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and writes the tokens of readable
    /// descriptors into `tokens`.
    ///
    /// # Errors
    ///
    /// `epoll_wait`'s error (interruptions are not errors).
    pub fn wait(&self, tokens: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        tokens.clear();
        // SAFETY: plain C structs for which all-zero is valid.
        let mut events: [libc::epoll_event; 64] = unsafe { mem::zeroed() };
        // SAFETY: `events` is a live array of 64 entries the kernel writes.
        let r =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), 64, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        tokens.extend(events[..r as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

pub(crate) fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain C struct for which all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: plain C struct for which all-zero is valid.
            let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is larger than and aligned for any
            // sockaddr type, sockaddr_in included.
            unsafe { ptr::write(ptr::from_mut(&mut storage).cast::<libc::sockaddr_in>(), sin) };
            (
                storage,
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            // SAFETY: plain C struct for which all-zero is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                ptr::write(
                    ptr::from_mut(&mut storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            (
                storage,
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // the storage is large enough and aligned for it.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn sockaddr_round_trip() {
        for a in [
            "127.0.0.1:5",
            "192.0.2.1:65535",
            "[2001:db8::1]:30000",
            "[::1]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let (s, _) = to_sockaddr(a);
            assert_eq!(from_sockaddr(&s), Some(a));
        }
    }

    #[test]
    fn batch_over_loopback() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let b_addr = local_addr(&b);
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let msgs: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (&p[..], b_addr)).collect();
        assert_eq!(send_batch(a.as_fd(), &msgs).unwrap(), 40);
        let epoll = Epoll::new().unwrap();
        epoll.add(b.as_fd(), 7).unwrap();
        let mut tokens = Vec::new();
        epoll.wait(&mut tokens, 1000).unwrap();
        assert_eq!(tokens, [7]);
        let mut bufs = vec![[0u8; BUF_LEN]; MAX_BATCH];
        let mut got = Vec::new();
        let mut all = Vec::new();
        while all.len() < 40 {
            recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap();
            assert!(!got.is_empty(), "datagrams lost on loopback");
            for (i, (len, src)) in got.iter().enumerate() {
                assert_eq!(*src, local_addr(&a));
                all.push(bufs[i][..*len].to_vec());
            }
        }
        assert_eq!(all, payloads);
        recv_batch(b.as_fd(), &mut bufs, &mut got).unwrap();
        assert!(got.is_empty(), "would-block is an empty batch");
        epoll.delete(b.as_fd()).unwrap();
    }

    #[test]
    fn reuseport_allows_a_second_bind() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = local_addr(&a);
        assert!(bind_udp(port).is_ok());
    }

    fn local_addr(fd: &OwnedFd) -> SocketAddr {
        // SAFETY: all-zero is valid for sockaddr_storage.
        let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `s` and `len` are live and sized for the call.
        let r =
            unsafe { libc::getsockname(fd.as_raw_fd(), ptr::from_mut(&mut s).cast(), &mut len) };
        assert_eq!(r, 0);
        from_sockaddr(&s).unwrap()
    }
}
