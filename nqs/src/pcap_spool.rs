//! Per-call pcaps: the SIP and RTP/RTCP of each call in
//! `DIR/YYYY/MM/DD/<call>.pcap` (the date of the call's first packet, UTC),
//! indexed by a [`PcapRow`] per call (the `pcaps` table). Optionally only
//! RTP headers are kept (the pcap records the full original length, like a
//! short snap length). Retention removes the oldest files by age and total
//! size.
//!
//! This is a driver-side component (it writes files) but takes `now` as an
//! argument like the cores, so retention is testable without a clock.
//!
//! # Driving contract
//! Feed every packet with the [`PacketClass`] the analyser gave it to
//! [`PcapSpool::handle_packet`]; on a call's `CallFinished`, call
//! [`PcapSpool::finish`] and send the returned row; call
//! [`PcapSpool::enforce_retention`] from time to time.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustc_hash::{FxHashMap, FxHashSet};
use wire::Timestamp;
use wire::capture::{LinkType, Packet, PcapWriter, TsResolution};

use crate::analyzer::PacketClass;
use crate::sink::PcapRow;

/// Tunables of the pcap spool.
#[derive(Clone, Debug)]
pub struct PcapSpoolConfig {
    /// Root directory.
    pub dir: PathBuf,
    /// Keep only the IP/UDP/RTP headers of RTP packets (SIP and RTCP are
    /// kept whole).
    pub rtp_header_only: bool,
    /// Files older than this are removed by retention (`None`: no limit).
    pub max_age: Option<Duration>,
    /// Oldest files are removed until the spool is below this many bytes
    /// (`None`: no limit).
    pub max_bytes: Option<u64>,
}

/// What can go wrong in the pcap spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcapSpoolError {
    /// A file or directory could not be created, written or removed.
    #[error("pcap spool {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The pcap writer failed.
    #[error("pcap spool {path}: {source}")]
    Pcap {
        /// The path.
        path: String,
        /// The cause.
        source: wire::capture::Error,
    },
}

/// What one retention pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Files removed for their age.
    pub expired: u64,
    /// Files removed to get below the size limit.
    pub evicted: u64,
    /// Bytes left in the spool.
    pub bytes: u64,
}

/// Which spool files retention may remove (paths relative to the spool
/// root), asked once per retention pass; `None` when it cannot tell (then
/// nothing is removed). With S3 offload: the pcaps already uploaded.
pub type Removable = std::sync::Arc<dyn Fn() -> Option<FxHashSet<String>> + Send + Sync>;

/// The spool. See the module docs for the driving contract.
pub struct PcapSpool {
    config: PcapSpoolConfig,
    removable: Option<Removable>,
    open: FxHashMap<usize, OpenPcap>,
    finished: FxHashSet<usize>,
    frame: Vec<u8>,
}

struct OpenPcap {
    writer: PcapWriter<BufWriter<File>>,
    call_id: String,
    rel: String,
    packets: u64,
    first: Timestamp,
    last: Timestamp,
}

impl PcapSpool {
    /// A spool rooted at `config.dir` (created if needed).
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn new(config: PcapSpoolConfig) -> Result<Self, PcapSpoolError> {
        fs::create_dir_all(&config.dir).map_err(|e| io(&config.dir, e))?;
        Ok(Self {
            config,
            removable: None,
            open: FxHashMap::default(),
            finished: FxHashSet::default(),
            frame: Vec::with_capacity(2048),
        })
    }

    /// Restricts retention to the files `removable` lists (e.g. only pcaps
    /// already offloaded to S3); the others still count towards
    /// [`PcapSpoolConfig::max_bytes`].
    #[must_use]
    pub fn with_removable(mut self, removable: Removable) -> Self {
        self.removable = Some(removable);
        self
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Number of calls with an open file.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    /// Writes a packet into its call's pcap. `call_id` is asked only when
    /// the call's file is opened. Packets of no call, and of calls already
    /// finished, are ignored.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written.
    pub fn handle_packet(
        &mut self,
        class: PacketClass,
        packet: &Packet<'_>,
        call_id: impl FnOnce(usize) -> Option<String>,
    ) -> Result<(), PcapSpoolError> {
        let (call, rtp) = match class {
            PacketClass::Sip { call: Some(c) } | PacketClass::Rtcp { call: Some(c) } => (c, false),
            PacketClass::Rtp { call: Some(c), .. } => (c, true),
            _ => return Ok(()),
        };
        if self.finished.contains(&call) {
            return Ok(());
        }
        if !self.open.contains_key(&call) {
            let Some(id) = call_id(call) else {
                return Ok(());
            };
            let opened = self.create(&id, packet.ts)?;
            self.open.insert(call, opened);
        }
        let Some(file) = self.open.get_mut(&call) else {
            return Ok(()); // inserted just above
        };
        wire::capture::build_udp_frame(packet.src, packet.dst, packet.payload, &mut self.frame)
            .map_err(|source| PcapSpoolError::Pcap {
                path: file.rel.clone(),
                source,
            })?;
        let orig_len = u32::try_from(self.frame.len()).unwrap_or(u32::MAX);
        let keep = if rtp && self.config.rtp_header_only {
            let headers = self.frame.len() - packet.payload.len();
            headers + rtp_header_len(packet.payload)
        } else {
            self.frame.len()
        };
        file.writer
            .write(packet.ts, &self.frame[..keep], orig_len)
            .map_err(|source| PcapSpoolError::Pcap {
                path: file.rel.clone(),
                source,
            })?;
        file.packets += 1;
        file.first = file.first.min(packet.ts);
        file.last = file.last.max(packet.ts);
        Ok(())
    }

    /// Forgets a finished call whose index the analyser released (and may
    /// give to a new call).
    pub fn release(&mut self, call: usize) {
        self.finished.remove(&call);
    }

    /// Closes a finished call's pcap and returns its index row (`None`
    /// if the call had no packets written).
    ///
    /// # Errors
    ///
    /// When the file cannot be flushed.
    pub fn finish(&mut self, call: usize) -> Result<Option<PcapRow>, PcapSpoolError> {
        self.finished.insert(call);
        let Some(file) = self.open.remove(&call) else {
            return Ok(None);
        };
        let path = self.config.dir.join(&file.rel);
        let mut out = file.writer.into_inner();
        out.flush().map_err(|e| io(&path, e))?;
        drop(out);
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Some(PcapRow {
            day: crate::sink::day(file.first.0),
            call_id: file.call_id,
            path: file.rel,
            packets: file.packets,
            bytes,
            first_ns: file.first.0,
            last_ns: file.last.0,
        }))
    }

    /// Removes files older than [`PcapSpoolConfig::max_age`] at `now`, then
    /// the oldest files until the total is within
    /// [`PcapSpoolConfig::max_bytes`]. Files of open calls are not touched,
    /// nor files [`PcapSpool::with_removable`] does not list.
    ///
    /// # Errors
    ///
    /// When the tree cannot be listed or a file not removed.
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<Retention, PcapSpoolError> {
        let open: FxHashSet<PathBuf> = self
            .open
            .values()
            .map(|f| self.config.dir.join(&f.rel))
            .collect();
        let mut files = Vec::new();
        walk(&self.config.dir, &mut files)?;
        files.retain(|(path, _, _)| !open.contains(path));
        files.sort_by_key(|&(_, modified, _)| modified);
        let mut out = Retention::default();
        let mut total: u64 = files.iter().map(|(_, _, len)| len).sum();
        let removable: Option<FxHashSet<PathBuf>> = self.removable.as_ref().map(|f| {
            f().unwrap_or_default()
                .iter()
                .map(|rel| self.config.dir.join(rel))
                .collect()
        });
        for (path, modified, len) in files {
            if removable.as_ref().is_some_and(|r| !r.contains(&path)) {
                continue;
            }
            let expired = self
                .config
                .max_age
                .is_some_and(|age| now.duration_since(modified).is_ok_and(|d| d > age));
            let over = self.config.max_bytes.is_some_and(|max| total > max);
            if !(expired || over) {
                continue;
            }
            fs::remove_file(&path).map_err(|e| io(&path, e))?;
            total -= len;
            if expired {
                out.expired += 1;
            } else {
                out.evicted += 1;
            }
            // Remove the day, month and year directories once empty.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == self.config.dir || fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        out.bytes = total;
        Ok(out)
    }

    fn create(&self, call_id: &str, ts: Timestamp) -> Result<OpenPcap, PcapSpoolError> {
        let rel = relative_path(call_id, ts);
        let path = self.config.dir.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let file = File::create(&path).map_err(|e| io(&path, e))?;
        let writer = PcapWriter::new(
            BufWriter::with_capacity(4096, file),
            LinkType::ETHERNET,
            TsResolution::Micro,
        )
        .map_err(|source| PcapSpoolError::Pcap {
            path: rel.clone(),
            source,
        })?;
        Ok(OpenPcap {
            writer,
            call_id: call_id.to_string(),
            rel,
            packets: 0,
            first: ts,
            last: ts,
        })
    }
}

/// `YYYY/MM/DD/<call>.pcap` for a call first seen at `ts` (UTC). The Call-ID
/// is reduced to `[A-Za-z0-9._@-]` (others become `_`) and 128 bytes, so it
/// can never leave the spool directory.
pub fn relative_path(call_id: &str, ts: Timestamp) -> String {
    let (y, m, d) = civil_from_days((ts.0 / 86_400_000_000_000) as i64);
    let mut name: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        name = format!("_{name}");
    }
    format!("{y:04}/{m:02}/{d:02}/{name}.pcap")
}

/// Length of the RTP header (fixed part, CSRCs, extension), capped at the
/// payload's length.
fn rtp_header_len(payload: &[u8]) -> usize {
    let Some(&b0) = payload.first() else {
        return 0;
    };
    //= https://www.rfc-editor.org/rfc/rfc3550#section-5.1
    //# CSRC count (CC): 4 bits
    //#    The CSRC count contains the number of CSRC identifiers that follow
    //#    the fixed header.
    let mut len = 12 + 4 * usize::from(b0 & 0x0f);
    //= https://www.rfc-editor.org/rfc/rfc3550#section-5.3.1
    //# The header extension contains a 16-bit length field that
    //# counts the number of 32-bit words in the extension, excluding the
    //# four-octet extension header
    if b0 & 0x10 != 0
        && let Some(ext) = payload.get(len + 2..len + 4)
    {
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    len.min(payload.len())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, SystemTime, u64)>) -> Result<(), PcapSpoolError> {
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(|e| io(&path, e))?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "pcap") {
            let modified = meta.modified().map_err(|e| io(&path, e))?;
            out.push((path, modified, meta.len()));
        }
    }
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> PcapSpoolError {
    PcapSpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use wire::capture::{Decoder, FileReader, Transport};

    fn packet(ts: u64, payload: &[u8]) -> Packet<'_> {
        Packet {
            ts: Timestamp(ts),
            src: "192.0.2.1:40000".parse().unwrap(),
            dst: "192.0.2.2:50000".parse().unwrap(),
            transport: Transport::Udp,
            payload,
            ip: None,
            stream_gap: false,
            truncated: false,
        }
    }

    #[test]
    fn paths_are_dated_and_cannot_escape() {
        // 2025-11-25 00:00:01 UTC (date -u -d @1764028801)
        let ts = Timestamp(1_764_028_801_000_000_000);
        assert_eq!(relative_path("abc@host", ts), "2025/11/25/abc@host.pcap");
        assert_eq!(
            relative_path("../../etc/passwd", ts),
            "2025/11/25/.._.._etc_passwd.pcap"
        );
        assert_eq!(relative_path("..", ts), "2025/11/25/_...pcap");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn rtp_header_lengths() {
        assert_eq!(rtp_header_len(&[0x80; 172]), 12);
        assert_eq!(rtp_header_len(&[0x82; 172]), 20);
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 2];
        ext.resize(200, 0);
        assert_eq!(rtp_header_len(&ext), 12 + 4 + 8);
        assert_eq!(rtp_header_len(&[0x8f; 20]), 20, "capped at the payload");
        assert_eq!(rtp_header_len(&[]), 0);
    }

    #[test]
    fn writes_reads_back_header_only_and_ignores_finished_calls() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = PcapSpool::new(PcapSpoolConfig {
            dir: dir.path().to_path_buf(),
            rtp_header_only: true,
            max_age: None,
            max_bytes: None,
        })
        .unwrap();
        let sip = b"BYE sip:x@y SIP/2.0\r\n\r\n".to_vec();
        let rtp = vec![0x80u8; 172];
        let t = 1_764_028_801_000_000_000;
        spool
            .handle_packet(PacketClass::Sip { call: Some(3) }, &packet(t, &sip), |_| {
                Some("c3".into())
            })
            .unwrap();
        spool
            .handle_packet(
                PacketClass::Rtp {
                    stream: 0,
                    call: Some(3),
                },
                &packet(t + 20_000_000, &rtp),
                |_| panic!("already open"),
            )
            .unwrap();
        spool
            .handle_packet(
                PacketClass::Rtp {
                    stream: 1,
                    call: None,
                },
                &packet(t, &rtp),
                |_| None,
            )
            .unwrap();
        let row = spool.finish(3).unwrap().expect("row");
        assert_eq!(row.path, "2025/11/25/c3.pcap");
        assert_eq!(
            (row.packets, row.first_ns, row.last_ns),
            (2, t, t + 20_000_000)
        );
        // Late packets of a finished call do not reopen (truncate) the file.
        spool
            .handle_packet(PacketClass::Sip { call: Some(3) }, &packet(t, &sip), |_| {
                Some("c3".into())
            })
            .unwrap();
        assert_eq!(spool.open_files(), 0);

        let file = File::open(dir.path().join(&row.path)).unwrap();
        let mut reader = FileReader::new(std::io::BufReader::new(file)).unwrap();
        let mut decoder = Decoder::new();
        let mut lens = Vec::new();
        let mut payloads = Vec::new();
        while let Some(frame) = reader.next_frame() {
            let frame = frame.unwrap();
            let full = 14 + 20 + 8 + if lens.is_empty() { sip.len() } else { 172 };
            assert_eq!(frame.orig_len as usize, full);
            lens.push(frame.data.len());
            if let Some(p) = decoder.decode(&frame) {
                payloads.push(p.payload.to_vec());
            }
        }
        assert_eq!(payloads[0], sip, "SIP kept whole and decodable");
        assert_eq!(lens, vec![14 + 20 + 8 + sip.len(), 14 + 20 + 8 + 12]);
        assert_eq!(
            row.bytes,
            fs::metadata(dir.path().join(&row.path)).unwrap().len()
        );
    }

    #[test]
    fn retention_by_age_then_size_keeps_open_calls() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = PcapSpool::new(PcapSpoolConfig {
            dir: dir.path().to_path_buf(),
            rtp_header_only: false,
            max_age: Some(Duration::from_secs(3600)),
            max_bytes: Some(1000),
        })
        .unwrap();
        let rtp = vec![0x80u8; 300];
        let t = 1_764_028_801_000_000_000;
        for call in 0..4usize {
            spool
                .handle_packet(
                    PacketClass::Rtp {
                        stream: call,
                        call: Some(call),
                    },
                    &packet(t, &rtp),
                    |c| Some(format!("call{c}")),
                )
                .unwrap();
            if call < 3 {
                spool.finish(call).unwrap();
            }
        }
        let files = |d: &Path| {
            let mut v = Vec::new();
            walk(d, &mut v).unwrap();
            v.len()
        };
        assert_eq!(files(dir.path()), 4);
        // Each finished file is 24 + 16 + 342 = 382 bytes: three exceed 1000.
        // The files' own modification time stands for "now" (no clock here).
        let mut listed = Vec::new();
        walk(dir.path(), &mut listed).unwrap();
        let newest = listed.iter().map(|(_, m, _)| *m).max().unwrap();
        let now = newest + Duration::from_secs(60);
        let r = spool.enforce_retention(now).unwrap();
        assert_eq!((r.expired, r.evicted), (0, 1));
        assert_eq!(files(dir.path()), 3);
        // Two hours later everything finished has expired; the open call stays.
        let r = spool
            .enforce_retention(now + Duration::from_secs(7200))
            .unwrap();
        assert_eq!((r.expired, r.evicted), (2, 0));
        assert_eq!(files(dir.path()), 1);
        assert_eq!(spool.open_files(), 1);
    }

    #[test]
    fn retention_removes_only_what_is_removable() {
        let dir = tempfile::tempdir().unwrap();
        let removable: Arc<Mutex<Option<FxHashSet<String>>>> = Arc::default();
        let r = removable.clone();
        let mut spool = PcapSpool::new(PcapSpoolConfig {
            dir: dir.path().to_path_buf(),
            rtp_header_only: false,
            max_age: None,
            max_bytes: Some(0),
        })
        .unwrap()
        .with_removable(Arc::new(move || r.lock().unwrap().clone()));
        let t = 1_764_028_801_000_000_000;
        let mut rels = Vec::new();
        for call in 0..3usize {
            spool
                .handle_packet(
                    PacketClass::Sip { call: Some(call) },
                    &packet(t, b"INVITE sip:x SIP/2.0\r\n\r\n"),
                    |c| Some(format!("call{c}")),
                )
                .unwrap();
            rels.push(spool.finish(call).unwrap().unwrap().path);
        }
        let mut listed = Vec::new();
        walk(dir.path(), &mut listed).unwrap();
        let now = listed.iter().map(|(_, m, _)| *m).max().unwrap() + Duration::from_secs(60);
        // Cannot tell (e.g. the index is unreadable): nothing goes.
        let out = spool.enforce_retention(now).unwrap();
        assert_eq!(out.evicted, 0);
        // Only the one uploaded goes, though all three are over the limit,
        // and the others still count.
        *removable.lock().unwrap() = Some(std::iter::once(rels[1].clone()).collect());
        let out = spool.enforce_retention(now).unwrap();
        assert_eq!(out.evicted, 1);
        assert!(out.bytes > 0);
        assert!(!dir.path().join(&rels[1]).exists());
        assert!(dir.path().join(&rels[0]).exists() && dir.path().join(&rels[2]).exists());
    }
}
