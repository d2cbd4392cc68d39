//! The relay benchmark's ceiling: `xdp-progs/media_reflect.c`, a bare XDP
//! program that rewrites each media datagram (MACs, addresses and ports
//! swapped, TTL and IPv4 checksum updated) and sends it back out of the
//! interface it arrived on. It does the least per-packet work a relay can
//! do, in the kernel, so the capacity it reaches bounds every backend.

use aya::Ebpf;
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use xdp_common::{MEDIA_CONFIG_MAP, MediaConfig};

use super::{AfXdpError, XdpAction};

/// The compiled `xdp-progs/media_reflect.o` (rebuilt and compared by
/// `xdp-progs/check.sh`).
pub static MEDIA_REFLECT_OBJECT: &[u8] =
    aya::include_bytes_aligned!("../../../xdp-progs/media_reflect.o");

const PROGRAM: &str = "media_reflect";
const COUNTERS: &str = "reflect_counters";

/// The loaded `media_reflect` program. Dropping it detaches it.
pub struct MediaReflect {
    ebpf: Ebpf,
}

impl MediaReflect {
    /// Loads the embedded object and writes the media port range (only
    /// `port_lo`/`port_hi` are used).
    ///
    /// # Errors
    /// [`AfXdpError::Object`] / [`AfXdpError::Program`] (with the verifier
    /// log) without CAP_BPF; [`AfXdpError::Map`] if the config update fails.
    pub fn load(config: MediaConfig) -> Result<MediaReflect, AfXdpError> {
        let mut ebpf = Ebpf::load(MEDIA_REFLECT_OBJECT)?;
        program(&mut ebpf)?.load()?;
        let map = ebpf
            .map_mut(MEDIA_CONFIG_MAP)
            .ok_or(AfXdpError::Missing(MEDIA_CONFIG_MAP))?;
        let mut array: Array<&mut MapData, [u8; MediaConfig::SIZE]> = Array::try_from(map)?;
        array.set(0, config.to_bytes(), 0)?;
        Ok(MediaReflect { ebpf })
    }

    /// Attaches to `ifname` in native mode, else generic mode.
    ///
    /// # Errors
    /// [`AfXdpError::Program`] when both modes fail.
    pub fn attach(&mut self, ifname: &str) -> Result<(), AfXdpError> {
        let prog = program(&mut self.ebpf)?;
        if prog.attach(ifname, XdpMode::Driver).is_err() {
            prog.attach(ifname, XdpMode::Skb)?;
        }
        Ok(())
    }

    /// Runs the program once on `frame` (`BPF_PROG_TEST_RUN`) and returns
    /// its verdict and the frame as the program left it.
    ///
    /// # Errors
    /// [`AfXdpError::Program`] when the kernel refuses the run.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<(XdpAction, Vec<u8>), AfXdpError> {
        let prog = program(&mut self.ebpf)?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let result = prog.test_run(opts)?;
        out.truncate(result.data_size_out as usize);
        Ok((XdpAction::from(result.return_value), out))
    }

    /// Frames reflected and passed to the kernel, summed over CPUs.
    ///
    /// # Errors
    /// [`AfXdpError::Map`] when reading the map fails.
    pub fn counters(&self) -> Result<(u64, u64), AfXdpError> {
        let map = self
            .ebpf
            .map(COUNTERS)
            .ok_or(AfXdpError::Missing(COUNTERS))?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let sum = |k: u32| array.get(&k, 0).map(|v| v.iter().sum::<u64>());
        Ok((sum(0)?, sum(1)?))
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, AfXdpError> {
    let prog = ebpf
        .program_mut(PROGRAM)
        .ok_or(AfXdpError::Missing(PROGRAM))?;
    prog.try_into().map_err(AfXdpError::Program)
}
