//! The `AF_PACKET` TPACKET_V3 receive ring: the only `unsafe` of the crate.
//!
//! One [`PacketRing`] is a raw packet socket bound to one interface in
//! promiscuous mode, with a memory-mapped ring of `block_count` blocks of
//! `block_size` bytes. The kernel fills a block with frames and hands it to
//! user space by setting `TP_STATUS_USER` in the block descriptor (when the
//! block is full or `retire_ms` after its first frame); user space reads
//! its frames and hands it back by writing `TP_STATUS_KERNEL`. See the
//! kernel's `Documentation/networking/packet_mmap.rst`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Size and timing of one ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingGeometry {
    /// Bytes per block (a multiple of the page size).
    pub block_size: usize,
    /// Blocks in the ring.
    pub block_count: usize,
    /// A block holding at least one frame is handed over after this many
    /// milliseconds even if it is not full.
    pub retire_ms: u32,
}

/// Counters of `PACKET_STATISTICS` (reading them resets them in the kernel).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RingStats {
    /// Frames that passed the socket's filters (received + dropped).
    pub packets: u64,
    /// Frames dropped because the ring was full.
    pub drops: u64,
    /// Times the queue was frozen (all blocks owned by user space).
    pub freeze_q: u64,
}

/// One frame of a block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawFrame<'a> {
    /// Kernel receive time: seconds since the Unix epoch.
    pub sec: u32,
    /// Kernel receive time: nanoseconds within the second.
    pub nsec: u32,
    /// The captured bytes, from the link-layer header on.
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub len: u32,
}

/// A packet socket with its memory-mapped TPACKET_V3 receive ring.
pub(crate) struct PacketRing {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    geometry: RingGeometry,
    next: usize,
}

// SAFETY: the mapping is owned by this value alone (nothing else holds its
// pointer), so moving the ring to another thread moves all access with it.
unsafe impl Send for PacketRing {}

const TPACKET_V3: libc::c_int = 2;
const FRAME_SIZE: usize = 2048;
// Offset of `block_status` in `tpacket_block_desc`: `version` (4),
// `offset_to_priv` (4), then `tpacket_hdr_v1` starting with it.
const BLOCK_STATUS: usize = 8;

impl PacketRing {
    /// Opens a ring on `iface` (in the calling thread's network namespace),
    /// turns promiscuous mode on and, with `fanout`, joins that
    /// `PACKET_FANOUT` group (hash by flow, IP fragments defragmented first
    /// so all of a datagram goes to one member). `fanout = Some(0)` asks
    /// the kernel for a new unique group id, read back with
    /// [`PacketRing::fanout_id`].
    pub(crate) fn open(
        iface: &str,
        geometry: RingGeometry,
        fanout: Option<u16>,
    ) -> io::Result<Self> {
        let name = CString::new(iface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::PACKET_VERSION, &TPACKET_V3)?;
        let frames = geometry.block_size / FRAME_SIZE * geometry.block_count;
        let req = libc::tpacket_req3 {
            tp_block_size: to_uint(geometry.block_size)?,
            tp_block_nr: to_uint(geometry.block_count)?,
            tp_frame_size: FRAME_SIZE as libc::c_uint,
            tp_frame_nr: to_uint(frames)?,
            tp_retire_blk_tov: geometry.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::PACKET_RX_RING, &req)?;
        let map_len = geometry.block_size * geometry.block_count;
        // SAFETY: maps the ring the kernel just allocated for this socket;
        // the result is checked, and unmapped only in `Drop`.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = PacketRing {
            fd,
            map: map.cast(),
            map_len,
            geometry,
            next: 0,
        };
        // SAFETY: an all-zero `sockaddr_ll` is a valid value of the type.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `addr` is a valid `sockaddr_ll` and its size is passed.
        let rc = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&ring.fd, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        if let Some(id) = fanout {
            let mut flags = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;
            if id == 0 {
                flags |= libc::PACKET_FANOUT_FLAG_UNIQUEID;
            }
            let arg: libc::c_int = (u32::from(id) | (flags << 16)) as libc::c_int;
            setsockopt(&ring.fd, libc::PACKET_FANOUT, &arg)?;
        }
        Ok(ring)
    }

    /// The id of the fanout group this socket is in.
    pub(crate) fn fanout_id(&self) -> io::Result<u16> {
        let v: u32 = getsockopt(&self.fd, libc::PACKET_FANOUT, 0)?;
        Ok((v & 0xffff) as u16)
    }

    /// The socket's descriptor, for `poll(2)`.
    pub(crate) fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Calls `f` for every frame of the next block user space owns, hands
    /// the block back to the kernel and returns the number of frames, or
    /// `None` when the kernel still owns the next block.
    pub(crate) fn read_block(&mut self, mut f: impl FnMut(RawFrame<'_>)) -> Option<usize> {
        let size = self.geometry.block_size;
        // SAFETY: `next < block_count`, so the block lies inside the mapping.
        let block = unsafe { self.map.add(self.next * size) };
        let status = block_status(block);
        if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the kernel set TP_STATUS_USER (read with Acquire above),
        // so it no longer writes this block until we hand it back below;
        // the block is `size` bytes inside the mapping.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(block, size) };
        let count = read_u32(bytes, 12).unwrap_or(0) as usize;
        let mut at = read_u32(bytes, 16).unwrap_or(0) as usize;
        let mut seen = 0;
        while seen < count {
            let Some(frame) = parse_frame(bytes, at) else {
                break;
            };
            f(frame.0);
            seen += 1;
            match frame.1 {
                0 => break,
                next => at += next,
            }
        }
        status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.geometry.block_count;
        Some(seen)
    }

    /// Reads and resets the kernel's counters.
    pub(crate) fn take_stats(&self) -> io::Result<RingStats> {
        let zero = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let s = getsockopt(&self.fd, libc::PACKET_STATISTICS, zero)?;
        Ok(RingStats {
            packets: u64::from(s.tp_packets),
            drops: u64::from(s.tp_drops),
            freeze_q: u64::from(s.tp_freeze_q_cnt),
        })
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are the mapping made in `open`, and no
        // borrow of it outlives `read_block`.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

/// Waits up to `timeout_ms` until one of `fds` is readable; returns whether
/// one is.
pub(crate) fn poll_readable(fds: &[libc::c_int], timeout_ms: i32) -> io::Result<bool> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a valid array of `pfds.len()` entries for the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    match rc {
        0.. => Ok(rc > 0),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// The block descriptor's status word.
fn block_status<'a>(block: *mut u8) -> &'a AtomicU32 {
    // SAFETY: `block` is the page-aligned start of a block of the mapping,
    // which stays mapped while the ring lives; the status word is 4-byte
    // aligned and shared with the kernel, so it is only accessed atomically.
    unsafe { AtomicU32::from_ptr(block.add(BLOCK_STATUS).cast()) }
}

/// The frame whose `tpacket3_hdr` starts at `at`, and `tp_next_offset`.
/// `None` if the header or its data fall outside the block.
fn parse_frame(block: &[u8], at: usize) -> Option<(RawFrame<'_>, usize)> {
    let next = read_u32(block, at)? as usize;
    let sec = read_u32(block, at + 4)?;
    let nsec = read_u32(block, at + 8)?;
    let snaplen = read_u32(block, at + 12)? as usize;
    let len = read_u32(block, at + 16)?;
    let mac = usize::from(u16::from_ne_bytes(
        block.get(at + 24..at + 26)?.try_into().ok()?,
    ));
    let data = block.get(at + mac..at + mac + snaplen)?;
    Some((
        RawFrame {
            sec,
            nsec,
            data,
            len,
        },
        next,
    ))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn to_uint(v: usize) -> io::Result<libc::c_uint> {
    libc::c_uint::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ring geometry too large"))
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt<T: Copy>(fd: &OwnedFd, opt: libc::c_int, mut value: T) -> io::Result<T> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live `T` and `len` its size; the kernel writes
    // at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_outside_the_block_is_refused() {
        let mut block = vec![0u8; 128];
        // tp_mac = 48, snaplen = 100: data would end at 148 > 128.
        block[12..16].copy_from_slice(&100u32.to_ne_bytes());
        block[24..26].copy_from_slice(&48u16.to_ne_bytes());
        assert!(parse_frame(&block, 0).is_none());
        block[12..16].copy_from_slice(&60u32.to_ne_bytes());
        block[16..20].copy_from_slice(&90u32.to_ne_bytes());
        let (frame, next) = parse_frame(&block, 0).unwrap();
        assert_eq!((frame.data.len(), frame.len, next), (60, 90, 0));
        assert!(parse_frame(&block, 120).is_none());
    }
}
