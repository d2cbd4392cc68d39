//! The live service's pipeline, between the capture drivers and the sinks:
//! decoded packets in, [`Batch`]es of rows out, per-call pcaps written on
//! the way. It owns the [`LiveAnalyzer`] and the [`PcapSpool`] and keeps
//! the `/metrics` counters.
//!
//! # Driving contract
//! [`Pipeline::handle_packet`] for every decoded packet (it runs the
//! lifecycle timers up to the packet's time first);
//! [`Pipeline::handle_timeout`] when idle (with the capture clock);
//! [`Pipeline::take_batch`] after each input and hand the rows to the sinks;
//! [`Pipeline::finish_all`] at the end of the input.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wire::Timestamp;
use wire::capture::Packet;

use crate::api::Metrics;
use crate::live::{LiveAnalyzer, LiveConfig, LiveEvent};
use crate::pcap_spool::PcapSpool;
use crate::sink::Batch;

/// The pipeline. See the module docs for the driving contract.
pub struct Pipeline {
    live: LiveAnalyzer,
    pcaps: Option<PcapSpool>,
    metrics: Arc<Metrics>,
    batch: Batch,
}

impl Pipeline {
    /// A pipeline writing per-call pcaps into `pcaps` (if any) and counting
    /// into `metrics`.
    pub fn new(config: LiveConfig, pcaps: Option<PcapSpool>, metrics: Arc<Metrics>) -> Self {
        Self {
            live: LiveAnalyzer::new(config),
            pcaps,
            metrics,
            batch: Batch::default(),
        }
    }

    /// The live analyser.
    pub fn live(&self) -> &LiveAnalyzer {
        &self.live
    }

    /// The `/metrics` counters this pipeline updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Handles one decoded packet.
    pub fn handle_packet(&mut self, packet: &Packet<'_>) {
        self.handle_timeout(packet.ts);
        let class = self.live.handle_packet(packet);
        self.record(class, packet);
    }

    /// Handles a media packet its source attributes to the call `call_id`
    /// (the dataplane's mirror rings; see
    /// [`crate::analyzer::Analyzer::handle_call_media`]).
    pub fn handle_call_media(&mut self, call_id: &str, packet: &Packet<'_>) {
        self.handle_timeout(packet.ts);
        let class = self.live.handle_call_media(call_id, packet);
        self.record(class, packet);
    }

    /// Writes the packet to its call's pcap, then drains the events.
    fn record(&mut self, class: crate::analyzer::PacketClass, packet: &Packet<'_>) {
        if let Some(spool) = self.pcaps.as_mut() {
            let analyzer = self.live.analyzer();
            let result = spool.handle_packet(class, packet, |call| {
                analyzer.call_report(call).map(|c| c.call_id)
            });
            if let Err(e) = result {
                self.metrics.pcap_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}");
            }
        }
        self.drain();
    }

    /// Counts a captured frame the decoder could not use.
    pub fn frame_dropped(&self) {
        self.metrics.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the lifecycle timers up to `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.live.handle_timeout(now);
        self.drain();
    }

    /// When [`Pipeline::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.live.poll_timeout()
    }

    /// Finishes every open call.
    pub fn finish_all(&mut self, now: Timestamp) {
        self.live.finish_all(now);
        self.drain();
    }

    /// Applies the pcap spool's retention at `now` (files of open calls are
    /// kept). `None` without a spool.
    ///
    /// # Errors
    ///
    /// When the spool cannot be listed or a file not removed.
    pub fn enforce_retention(
        &mut self,
        now: std::time::SystemTime,
    ) -> Result<Option<crate::pcap_spool::Retention>, crate::pcap_spool::PcapSpoolError> {
        self.pcaps
            .as_mut()
            .map(|spool| spool.enforce_retention(now))
            .transpose()
    }

    /// The rows produced since the last call.
    pub fn take_batch(&mut self) -> Batch {
        std::mem::take(&mut self.batch)
    }

    fn drain(&mut self) {
        while let Some(event) = self.live.poll_event() {
            match event {
                LiveEvent::Interval {
                    call_id: Some(call_id),
                    stream,
                    sample,
                } => self.batch.push_interval(&call_id, stream, &sample),
                LiveEvent::Interval { call_id: None, .. } => {}
                LiveEvent::SipMessage(m) => self.batch.push_sip(&m),
                LiveEvent::CallReleased(call) => {
                    if let Some(spool) = self.pcaps.as_mut() {
                        spool.release(call);
                    }
                }
                LiveEvent::CallFinished(call) => {
                    if let Some(spool) = self.pcaps.as_mut() {
                        match spool.finish(call.call.index) {
                            Ok(Some(row)) => self.batch.pcaps.push(row),
                            Ok(None) => {}
                            Err(e) => {
                                self.metrics.pcap_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!("{e}");
                            }
                        }
                    }
                    self.batch.push_finished(&call);
                }
            }
        }
        let c = self.live.analyzer().counters();
        let m = &self.metrics;
        m.packets.store(c.packets, Ordering::Relaxed);
        m.sip_messages.store(c.sip_messages, Ordering::Relaxed);
        m.sip_malformed.store(c.sip_malformed, Ordering::Relaxed);
        m.rtp_packets.store(c.rtp_packets, Ordering::Relaxed);
        m.calls_dropped.store(c.calls_dropped, Ordering::Relaxed);
        m.streams_dropped
            .store(c.streams_dropped, Ordering::Relaxed);
        let t = self.live.analyzer().table_sizes();
        m.calls_held.store(t.calls as u64, Ordering::Relaxed);
        m.streams_held.store(t.streams as u64, Ordering::Relaxed);
        let l = self.live.counters();
        m.calls_active.store(l.active_calls, Ordering::Relaxed);
        m.calls_finished.store(l.finished_calls, Ordering::Relaxed);
        m.late_packets.store(l.late_packets, Ordering::Relaxed);
    }
}
