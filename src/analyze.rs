//! `voxplane analyze`: the driver around [`nqs::analyzer::Analyzer`]. It
//! reads capture files, decodes frames with [`wire::capture`], feeds the
//! analyser, and writes what was asked for (table/JSON/CSV, WAVs, per-call
//! pcaps). All analysis logic is in the sans-IO core; this file is I/O.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nqs::analyzer::{Analyzer, AnalyzerConfig, PacketClass};
use nqs::stream::StreamConfig;
use wire::capture::{Decoder, FileReader, LinkType, PcapWriter, TsResolution};

use crate::config::{Config, OutputFormat};
use crate::{AnalyzeArgs, Format, output};

/// Inputs larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 16 * 1024 * 1024;

/// Runs `voxplane analyze`.
pub fn run(config: &Config, args: &AnalyzeArgs) -> anyhow::Result<()> {
    let format = args.format.unwrap_or(match config.analyze.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Json => Format::Json,
        OutputFormat::Csv => Format::Csv,
    });
    let outcome = analyze_files(
        &args.files,
        &Options {
            wav_dir: args.wav_dir.clone(),
            split_dir: args.split_dir.clone(),
            progress: !args.no_progress,
            analyzer: AnalyzerConfig {
                orphan_streams: !args.no_orphans,
                keep_intervals: args.intervals,
                ..analyzer_config(config)
            },
        },
    )?;
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    output::write(&mut out, format, &outcome.analyzer, stdout_is_color())?;
    out.flush()?;
    Ok(())
}

/// What to produce besides the report.
pub struct Options {
    /// Directory for one WAV per G.711 leg.
    pub wav_dir: Option<PathBuf>,
    /// Directory for one pcap per call.
    pub split_dir: Option<PathBuf>,
    /// Show a progress bar on large inputs.
    pub progress: bool,
    /// The analyser's settings (`keep_audio` is set from `wav_dir`).
    pub analyzer: AnalyzerConfig,
}

/// The analyser settings the configuration file asks for.
pub fn analyzer_config(config: &Config) -> AnalyzerConfig {
    let a = &config.analyze;
    AnalyzerConfig {
        stream: StreamConfig {
            interval_ns: a.interval_secs.saturating_mul(1_000_000_000),
            jb_f1_ms: a.jitter_buffer.fixed_ms[0],
            jb_f2_ms: a.jitter_buffer.fixed_ms[1],
            jb_adaptive_max_ms: a.jitter_buffer.adaptive_max_ms,
        },
        codec_overrides: a
            .codec_overrides
            .iter()
            .map(|(pt, name)| (*pt, name.clone()))
            .collect(),
        ..AnalyzerConfig::default()
    }
}

/// The result of [`analyze_files`].
pub struct Outcome {
    /// The analyser, holding calls and streams (see [`Analyzer::view`]).
    pub analyzer: Analyzer,
    /// WAV files written.
    pub wavs: Vec<PathBuf>,
    /// Per-call pcaps written.
    pub splits: usize,
}

/// Analyses `files` in order as one capture. Unreadable or truncated files
/// are reported on stderr and what was readable is analysed; fails only if
/// nothing at all could be analysed.
pub fn analyze_files(files: &[PathBuf], opts: &Options) -> anyhow::Result<Outcome> {
    let mut analyzer = Analyzer::new(AnalyzerConfig {
        keep_audio: opts.wav_dir.is_some(),
        ..opts.analyzer.clone()
    });
    let mut split = match &opts.split_dir {
        Some(dir) => Some(SplitWriter::new(dir)?),
        None => None,
    };
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let progress =
        (opts.progress && io::stderr().is_terminal() && total_bytes >= PROGRESS_MIN_BYTES)
            .then(|| progress_bar(total_bytes));
    let mut frames_total = 0u64;
    let mut problems = Vec::new();
    let mut done_bytes = 0u64;
    for path in files {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                tracing::warn!("{}: {e}", path.display());
                continue;
            }
        };
        let mut reader = match FileReader::new(file) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{}: not a readable capture: {e}", path.display()));
                tracing::warn!("{}: not a readable capture: {e}", path.display());
                continue;
            }
        };
        let mut decoder = Decoder::new();
        let mut frames = 0u64;
        loop {
            let frame = match reader.next_frame() {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    let msg = format!(
                        "{}: stopped after frame {frames} (byte {}): {e}; analysed what came before",
                        path.display(),
                        reader.byte_offset()
                    );
                    tracing::warn!("{msg}");
                    problems.push(msg);
                    break;
                }
            };
            frames += 1;
            if let Some(packet) = decoder.decode(&frame) {
                let class = analyzer.handle_packet(&packet);
                if let Some(split) = split.as_mut() {
                    split.write(class, &packet)?;
                }
                while analyzer.poll_event().is_some() {}
            }
            if let Some(bar) = &progress
                && frames.is_multiple_of(65_536)
            {
                bar.set_position(done_bytes + reader.byte_offset());
            }
        }
        frames_total += frames;
        tracing::debug!(file = %path.display(), frames, stats = ?decoder.stats(), "decoded");
        done_bytes += reader.byte_offset();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if frames_total == 0 {
        match problems.first() {
            Some(p) => bail!("nothing analysed: {p}"),
            None => bail!("nothing analysed: the capture holds no packets"),
        }
    }
    let mut wavs = Vec::new();
    if let Some(dir) = &opts.wav_dir {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for id in analyzer.stream_ids() {
            let Some(audio) = analyzer.kept_audio(id).filter(|a| !a.is_empty()) else {
                continue;
            };
            let Some(stream) = analyzer.stream_summary(id) else {
                continue;
            };
            let pcm = nqs::render::render_g711(audio);
            let path = dir.join(wav_name(&stream));
            write_wav(&path, &pcm)?;
            wavs.push(path);
        }
    }
    let splits = match split {
        Some(s) => s.finish(&analyzer)?,
        None => 0,
    };
    Ok(Outcome {
        analyzer,
        wavs,
        splits,
    })
}

fn wav_name(stream: &nqs::analyzer::StreamSummary) -> String {
    let call = stream
        .call_id
        .as_deref()
        .map(sanitize)
        .unwrap_or_else(|| "orphan".to_string());
    format!(
        "{call}_{}_{}_{}.wav",
        stream.id,
        sanitize(&stream.src),
        stream.ssrc
    )
}

/// Keeps file names portable: anything but `[A-Za-z0-9._-]` becomes `_`.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(80);
    out
}

fn write_wav(path: &Path, pcm: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for &s in pcm {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// True when stdout is a terminal and `NO_COLOR` is unset.
pub fn stdout_is_color() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes one pcap per call. Every packet is written as an Ethernet +
/// IPv4/IPv6 + UDP frame rebuilt from the decoded endpoints and payload, so
/// reassembled fragments and SIP-over-TCP messages come out whole (link
/// headers such as VLAN tags and TCP segmentation are not preserved).
/// Each call's records collect in a small buffer that is appended to its
/// file when full, so any number of calls works without holding a file
/// descriptor per call.
struct SplitWriter {
    dir: PathBuf,
    writers: HashMap<usize, PcapWriter<CallSink>>,
    frame: Vec<u8>,
}

impl SplitWriter {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            writers: HashMap::new(),
            frame: Vec::new(),
        })
    }

    fn write(
        &mut self,
        class: PacketClass,
        packet: &wire::capture::Packet<'_>,
    ) -> anyhow::Result<()> {
        let call = match class {
            PacketClass::Sip { call }
            | PacketClass::Rtcp { call }
            | PacketClass::Rtp { call, .. } => call,
            PacketClass::Other => None,
        };
        let Some(call) = call else { return Ok(()) };
        let writer = match self.writers.entry(call) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let path = self.dir.join(format!("call-{call:05}.pcap"));
                File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                let sink = CallSink {
                    path,
                    buf: Vec::new(),
                };
                e.insert(PcapWriter::new(
                    sink,
                    LinkType::ETHERNET,
                    TsResolution::Micro,
                )?)
            }
        };
        wire::capture::build_udp_frame(packet.src, packet.dst, packet.payload, &mut self.frame)?;
        writer.write(packet.ts, &self.frame, self.frame.len() as u32)?;
        Ok(())
    }

    /// Flushes every file and writes `index.tsv`: call index, Call-ID, file.
    fn finish(self, analyzer: &Analyzer) -> anyhow::Result<usize> {
        let mut names = HashMap::new();
        for (call, w) in self.writers {
            let mut sink = w.into_inner();
            sink.flush()
                .with_context(|| format!("writing {}", sink.path.display()))?;
            let name = sink
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            names.insert(call, name);
        }
        let mut index = String::from("call\tcall_id\tfile\tstreams\n");
        for call in analyzer.calls() {
            if let Some(name) = names.get(&call.index) {
                index.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    call.index,
                    call.call_id,
                    name,
                    call.streams.len()
                ));
            }
        }
        let path = self.dir.join("index.tsv");
        fs::write(&path, index).with_context(|| format!("writing {}", path.display()))?;
        Ok(names.len())
    }
}

/// A per-call pcap: bytes gather in memory and are appended to the file in
/// [`CallSink::CHUNK`]-sized pieces.
struct CallSink {
    path: PathBuf,
    buf: Vec<u8>,
}

impl CallSink {
    const CHUNK: usize = 16 * 1024;
}

impl Write for CallSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            fs::OpenOptions::new()
                .append(true)
                .open(&self.path)?
                .write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}
