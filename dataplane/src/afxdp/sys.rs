//! The unsafe edge of the AF_XDP backend: the UMEM area, the frame pool that
//! owns every UMEM frame while user space holds it, and the `xdpilone` socket
//! set-up. Everything above this module is safe code.
//!
//! Ownership of a UMEM frame moves between the [`FramePool`] (free), the
//! kernel (in a fill or TX ring) and the driver (an [`RxFrame`] token, not
//! `Copy`, not `Clone`). Bytes are only reachable through a token, so user
//! space never touches a frame the kernel may be writing, and a token is
//! consumed by exactly one of "transmit" or "recycle".

use std::ffi::CString;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;

use xdpilone::xdp::XdpDesc;
use xdpilone::{DeviceQueue, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig};

use super::AfXdpError;

/// Most `sendto` kicks per TX ring per [`super::Worker::poll`] round.
const KICKS_PER_ROUND: usize = 16;

/// Size of one UMEM frame, bytes (a page: room for any MTU-1500 frame plus
/// headroom).
pub const FRAME_SIZE: u32 = 4096;

/// A UMEM frame handed to user space by an RX ring: proof that the kernel
/// no longer uses it. Consumed by [`FramePool::recycle`] or by queueing it on
/// a TX ring.
#[derive(Debug)]
pub struct RxFrame {
    /// Offset of the packet's first byte in the UMEM.
    addr: u64,
    /// Packet length, bytes.
    len: u32,
}

impl RxFrame {
    /// Packet length, bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the packet is empty (never for a real frame).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Anonymous page-aligned memory registered as a UMEM, with the free list of
/// its frames. Dropped after every socket that uses it (see the field
/// order in `Worker`).
pub struct FramePool {
    // Field order: `umem` (which closes the UMEM socket) drops before `area`.
    umem: Umem,
    area: Area,
    free: Vec<u64>,
    /// Whether the UMEM's own socket already serves an interface queue; the
    /// next sockets get their own descriptor and share the UMEM.
    umem_socket_used: bool,
}

impl FramePool {
    /// Maps `frames` frames of [`FRAME_SIZE`] bytes and registers them.
    ///
    /// # Errors
    /// [`AfXdpError::Umem`] when `mmap` or the UMEM registration fails.
    pub fn new(frames: u32, ring_size: u32) -> Result<FramePool, AfXdpError> {
        let area = Area::new(frames as usize * FRAME_SIZE as usize)?;
        let config = UmemConfig {
            fill_size: ring_size,
            complete_size: ring_size,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page aligned (mmap), valid for its whole length,
        // and outlives `umem`: both live in this struct, `umem` is declared
        // first so it is dropped first, and `area` is never moved out.
        let umem =
            unsafe { Umem::new(config, area.ptr) }.map_err(|e| AfXdpError::Umem(e.get_raw()))?;
        let free = (0..frames)
            .rev()
            .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
            .collect();
        Ok(FramePool {
            umem,
            area,
            free,
            umem_socket_used: false,
        })
    }

    /// Frames currently free (neither in a ring nor held by the driver).
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// The packet bytes of a frame the driver holds.
    pub fn bytes(&mut self, frame: &RxFrame) -> &mut [u8] {
        let start = frame.addr as usize;
        let end = start + frame.len as usize;
        assert!(end <= self.area.len, "RX descriptor outside the UMEM");
        // SAFETY: `RxFrame` tokens are only made from RX descriptors (the
        // kernel has finished writing the frame and does not touch it again
        // until it is put on a fill or TX ring, which consumes the token);
        // the range was bounds-checked just above; `&mut self` makes the
        // borrow unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.ptr.cast::<u8>().as_ptr().add(start),
                frame.len as usize,
            )
        }
    }

    /// Copies `data` into a free frame and returns it as a token ready to
    /// transmit, or `None` when the pool is empty or `data` does not fit.
    pub fn alloc_with(&mut self, data: &[u8]) -> Option<RxFrame> {
        if data.len() > FRAME_SIZE as usize {
            return None;
        }
        let addr = self.free.pop()?;
        let frame = RxFrame {
            addr,
            len: data.len() as u32,
        };
        self.bytes(&frame).copy_from_slice(data);
        Some(frame)
    }

    /// Returns a frame to the free list.
    pub fn recycle(&mut self, frame: RxFrame) {
        self.free.push(chunk_base(frame.addr));
    }

    fn take(&mut self) -> Option<u64> {
        self.free.pop()
    }
}

/// One AF_XDP socket bound to an interface queue, with its own fill and
/// completion rings (shared UMEM), RX and TX rings.
pub struct Xsk {
    device: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    /// Frames on the TX ring not yet completed.
    in_flight: u32,
    /// Frames on the fill ring not yet received back.
    in_fill: u32,
}

impl Xsk {
    /// Creates a socket on `ifname` queue `queue`, sharing `pool`'s UMEM, in
    /// copy mode (veth has no zero-copy), with `need_wakeup`.
    ///
    /// # Errors
    /// [`AfXdpError::Socket`] naming the step that failed.
    pub fn new(
        pool: &mut FramePool,
        ifname: &str,
        queue: u32,
        ring_size: u32,
    ) -> Result<Xsk, AfXdpError> {
        let step = |what: &'static str| {
            move |e: xdpilone::Errno| AfXdpError::Socket {
                what,
                errno: e.get_raw(),
            }
        };
        let name = CString::new(ifname).map_err(|_| AfXdpError::Interface(ifname.to_owned()))?;
        let mut info = IfInfo::invalid();
        info.from_name(&name)
            .map_err(|_| AfXdpError::Interface(ifname.to_owned()))?;
        info.set_queue(queue);
        let shared = pool.umem_socket_used;
        let sock = if shared {
            Socket::new(&info)
        } else {
            Socket::with_shared(&info, &pool.umem)
        }
        .map_err(step("socket"))?;
        pool.umem_socket_used = true;
        let device = pool
            .umem
            .fq_cq(&sock)
            .map_err(step("fill/completion rings"))?;
        let size = NonZeroU32::new(ring_size);
        let config = SocketConfig {
            rx_size: size,
            tx_size: size,
            // A socket sharing another's UMEM must not pass flags of its own
            // (the kernel answers EINVAL): it inherits copy mode and
            // need_wakeup from the UMEM's socket.
            bind_flags: if shared {
                0
            } else {
                SocketConfig::XDP_BIND_NEED_WAKEUP | XDP_COPY
            },
        };
        let user = pool
            .umem
            .rx_tx(&sock, &config)
            .map_err(step("rx/tx rings"))?;
        let rx = user.map_rx().map_err(step("map rx ring"))?;
        let tx = user.map_tx().map_err(step("map tx ring"))?;
        // Binds with XDP_SHARED_UMEM when `sock` is not the UMEM's own socket.
        pool.umem.bind(&user).map_err(step("bind"))?;
        Ok(Xsk {
            device,
            rx,
            tx,
            in_flight: 0,
            in_fill: 0,
        })
    }

    /// Tops the fill ring up from the pool (as much as it has room for).
    pub fn refill(&mut self, pool: &mut FramePool, max: u32) -> u32 {
        let mut writer = self.device.fill(max);
        let mut n = 0;
        while writer.capacity() > 0 {
            let Some(addr) = pool.take() else { break };
            if !writer.insert_once(addr) {
                pool.free.push(addr);
                break;
            }
            n += 1;
        }
        writer.commit();
        drop(writer);
        self.in_fill += n;
        if n > 0 && self.device.needs_wakeup() {
            self.device.wake();
        }
        n
    }

    /// Reaps TX completions back into the pool.
    pub fn reap(&mut self, pool: &mut FramePool) -> u32 {
        let mut reader = self.device.complete(self.in_flight);
        let mut n = 0;
        while let Some(addr) = reader.read() {
            pool.free.push(chunk_base(addr));
            n += 1;
        }
        reader.release();
        self.in_flight -= n;
        n
    }

    /// Reads up to `max` received frames into `out`.
    pub fn receive(&mut self, max: u32, out: &mut Vec<RxFrame>) -> u32 {
        let mut reader = self.rx.receive(max);
        let mut n = 0;
        while let Some(desc) = reader.read() {
            out.push(RxFrame {
                addr: desc.addr,
                len: desc.len,
            });
            n += 1;
        }
        reader.release();
        self.in_fill -= n;
        n
    }

    /// Queues a frame for transmission; gives it back when the TX ring is full.
    pub fn transmit(&mut self, frame: RxFrame) -> Result<(), RxFrame> {
        let mut writer = self.tx.transmit(1);
        let desc = XdpDesc {
            addr: frame.addr,
            len: frame.len,
            options: 0,
        };
        if writer.insert_once(desc) {
            writer.commit();
            self.in_flight += 1;
            Ok(())
        } else {
            Err(frame)
        }
    }

    /// Queues `frames` for transmission with one ring update; frames that
    /// do not fit go back to `pool`. Returns (queued, refused).
    pub fn transmit_batch(
        &mut self,
        frames: &mut Vec<RxFrame>,
        pool: &mut FramePool,
    ) -> (u32, u32) {
        let mut writer = self.tx.transmit(frames.len() as u32);
        let mut queued = 0;
        let mut refused = 0;
        for frame in frames.drain(..) {
            let desc = XdpDesc {
                addr: frame.addr,
                len: frame.len,
                options: 0,
            };
            if writer.insert_once(desc) {
                queued += 1;
            } else {
                pool.recycle(frame);
                refused += 1;
            }
        }
        writer.commit();
        self.in_flight += queued;
        (queued, refused)
    }

    /// Frames on the fill ring, owned by the kernel until received.
    pub fn in_fill(&self) -> u32 {
        self.in_fill
    }

    /// Frames queued for TX and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Kicks the kernel to send what is on the TX ring. In copy mode each
    /// `sendto` sends a limited batch, so the driver kicks while frames are
    /// pending (design.md, pitfalls).
    pub fn kick(&mut self) {
        // Each `sendto` moves at most a small batch (32 in Linux 6.x) in
        // copy mode: kick again while it makes progress, bounded so a
        // stuck device cannot hold the worker.
        for _ in 0..KICKS_PER_ROUND {
            let before = self.tx.pending();
            if before == 0 {
                break;
            }
            self.tx.wake();
            if self.tx.pending() >= before {
                break;
            }
        }
    }

    /// The socket's file descriptor, for the `XSKMAP`.
    pub fn fd(&self) -> XskFd {
        XskFd(self.rx.as_raw_fd())
    }
}

/// An AF_XDP socket's descriptor, borrowed for an `XSKMAP` update.
#[derive(Clone, Copy, Debug)]
pub struct XskFd(RawFd);

impl XskFd {
    /// A descriptor that is no socket, for tests of argument checks.
    #[cfg(test)]
    pub fn invalid() -> XskFd {
        XskFd(-1)
    }
}

impl AsRawFd for XskFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// `XDP_COPY` bind flag (linux/if_xdp.h): veth refuses zero-copy.
const XDP_COPY: u16 = 1 << 1;

fn chunk_base(addr: u64) -> u64 {
    addr & !(u64::from(FRAME_SIZE) - 1)
}

/// An anonymous private mapping, unmapped on drop.
struct Area {
    ptr: NonNull<[u8]>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> Result<Area, AfXdpError> {
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; the result is checked against MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(AfXdpError::Umem(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let ptr = NonNull::new(std::ptr::slice_from_raw_parts_mut(raw.cast::<u8>(), len))
            .ok_or(AfXdpError::Umem(libc::ENOMEM))?;
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; the UMEM socket
        // that referenced the area has been closed (FramePool's field order).
        unsafe {
            libc::munmap(self.ptr.cast::<libc::c_void>().as_ptr(), self.len);
        }
    }
}

// SAFETY: the area is plain memory owned by this value; moving it to another
// thread moves that ownership (workers are created on their own thread, but
// may be built elsewhere and sent).
unsafe impl Send for Area {}

/// The link-layer address of interface `name` in the calling thread's
/// network namespace (`SIOCGIFHWADDR`), or the errno.
pub(crate) fn hardware_address(name: &str) -> Result<[u8; 6], i32> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(libc::ENODEV);
    }
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name (zeroed above,
    // shorter than IFNAMSIZ) and writes a sockaddr into `req`, which lives
    // for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: a successful SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data) {
        *dst = src as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_base_masks_the_headroom_offset() {
        assert_eq!(chunk_base(3 * 4096 + 256), 3 * 4096);
        assert_eq!(chunk_base(0), 0);
    }

    #[test]
    fn pool_allocates_recycles_and_bounds_frames() {
        // Registering a UMEM needs no privileges beyond AF_XDP sockets,
        // which need CAP_NET_RAW: skip when the socket cannot be made.
        let mut pool = match FramePool::new(4, 4) {
            Ok(p) => p,
            Err(AfXdpError::Umem(errno @ (libc::EPERM | libc::EACCES | libc::EAFNOSUPPORT)))
                if std::env::var_os("VOXPLANE_REQUIRE_TOOLS").is_none() =>
            {
                let e = std::io::Error::from_raw_os_error(errno);
                eprintln!("SKIP: pool_allocates_recycles_and_bounds_frames: {e}");
                return;
            }
            Err(e) => panic!("UMEM: {e}"),
        };
        assert_eq!(pool.free(), 4);
        let f = pool.alloc_with(b"abc").unwrap();
        assert_eq!(pool.bytes(&f), b"abc");
        assert_eq!(pool.free(), 3);
        assert!(pool.alloc_with(&[0u8; FRAME_SIZE as usize + 1]).is_none());
        pool.recycle(f);
        assert_eq!(pool.free(), 4);
        let held: Vec<_> = (0..4).map(|_| pool.alloc_with(b"x").unwrap()).collect();
        assert!(pool.alloc_with(b"x").is_none());
        for f in held {
            pool.recycle(f);
        }
    }
}
