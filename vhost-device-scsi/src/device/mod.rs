// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-scsi device: queue 0 control, queue 1 events, queues 2… requests.
//!
//! Worker 0 serves the control, event and first request queue; every further
//! request queue has a worker thread of its own, so a guest's queues run in
//! parallel. Commands run to completion in order on their queue, so a write is
//! in the image file (and, with FUA or SYNCHRONIZE CACHE, on stable storage)
//! before its completion is put on the used ring.
//!
//! Task management waits for the commands it covers (module `inflight`).
//!
//! The event queue's buffers are kept: this target raises no events (no
//! hot-plug, no parameter changes), so they are never used, as the spec allows.

mod inflight;

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vhost_device_common::config_space::{self, ConfigError};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::events::HostEvents;
use vhost_device_common::queue::{
    drain_chains, ChainBuffers, Completion, HeldChain, QueueContext, Vring,
};
use vhost_device_common::vhost_user_backend::VringT;
use vhost_device_common::virtio_queue::QueueT;
use vhost_device_common::vm_memory::ByteValued;
use vhost_device_common::vmm_sys_util::epoll::EventSet;

use crate::args::{Config as Args, Engine, Image};
use crate::host::linux::FileBlock;
use crate::host::mock::MemBlock;
use crate::host::uring::{Finished, Uring};
use crate::host::BlockHost;
use crate::request::cdb::{self, Lun};
use crate::request::cdb::{IoOp, Outcome};
use crate::request::PendingIo;
use crate::request::{self, Command, Control, Sizes, Target, TmfAction};
use crate::virtio::{decode_lun, response};
use crate::virtio::{
    Config, CDB_SIZE, CONFIG_WRITABLE, CONTROL_QUEUE, EVENT_QUEUE, FIRST_REQUEST_QUEUE, SENSE_SIZE,
};
use inflight::{Covered, InFlight};

/// Queue size offered.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Host-event token: a command finished while a TMF waits.
const TOKEN_TMF: u16 = 0;

/// What an I/O in flight on io_uring carries to its completion.
#[derive(Debug)]
struct Token {
    chain: HeldChain,
    pending: PendingIo,
    id: u64,
}

/// An I/O that finished while its queue could not take the completion
/// (stopping): answered by `stop_queue` or the next drain.
#[derive(Debug)]
struct Unpublished {
    chain: HeldChain,
    pending: PendingIo,
    outcome: Outcome,
    id: u64,
}

/// One request queue's worker state.
#[derive(Debug)]
struct QueueState {
    scratch: Vec<u8>,
    bufs: ChainBuffers,
    uring: Option<Uring<Token>>,
    unpublished: Vec<Unpublished>,
}

impl QueueState {
    fn new(engine: Engine) -> io::Result<Self> {
        let uring = match engine {
            Engine::Sync => None,
            Engine::IoUring => Some(Uring::new()?),
        };
        Ok(Self {
            scratch: Vec::new(),
            bufs: ChainBuffers::default(),
            uring,
            unpublished: Vec::new(),
        })
    }
}

/// Serve `p` from the page cache without waiting, if it can be: the used
/// length, or `None` (nothing done) when the device would have to wait.
fn nowait(
    lun: &Lun,
    p: &PendingIo,
    chain: &mut vhost_device_common::queue::Chain<'_>,
    bufs: &mut ChainBuffers,
) -> Option<u32> {
    chain.buffers(bufs).ok()?;
    let write = p.io.op != IoOp::Read;
    let transfer = match lun
        .host
        .transfer_nowait(write, bufs, p.skip, p.io.len, p.io.offset)
    {
        Ok(false) => {
            bufs.clear();
            return None;
        }
        Ok(true) if !write => bufs.mark_written(p.skip, p.io.len),
        Ok(true) => Ok(()),
        Err(e) => Err(e),
    };
    bufs.clear();
    let outcome = cdb::io_outcome(lun, &p.io, transfer, None);
    Some(request::finish(p, outcome, &mut chain.writer).unwrap_or(0))
}

/// The outcome of an I/O the ring finished: a short transfer is completed
/// here (with the flush its link cancelled), a read is logged as written
/// guest memory.
fn io_done(
    lun: &Lun,
    p: &PendingIo,
    bufs: &ChainBuffers,
    transfer: io::Result<usize>,
    mut flush: Option<io::Result<()>>,
) -> Outcome {
    let io = &p.io;
    let transfer = match transfer {
        Ok(n) if n >= io.len => Ok(()),
        Ok(n) => {
            let (skip, rest, at) = (p.skip + n, io.len - n, io.offset + n as u64);
            let r = match io.op {
                IoOp::Read => lun.host.read_into(bufs, skip, rest, at),
                _ => lun.host.write_from(bufs, skip, rest, at),
            };
            if r.is_ok() && io.op.flushes() && cdb::may_flush(lun) {
                flush = Some(lun.host.flush());
            }
            r
        }
        Err(e) => Err(e),
    };
    let transfer = match io.op {
        IoOp::Read => transfer.and_then(|()| bufs.mark_written(p.skip, io.len)),
        _ => transfer,
    };
    cdb::io_outcome(lun, io, transfer, flush)
}

/// A task management function waiting for the commands it covers.
#[derive(Debug)]
struct PendingTmf {
    chain: HeldChain,
    covered: Vec<Covered>,
    response: u8,
}

/// Why the LUNs could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Open failed.
    #[error("cannot open LUN {index} image {path}")]
    Open {
        /// LUN number.
        index: usize,
        /// Path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// One image file for two LUNs, one of them writable.
    #[error("LUN {index} image {path} is the image of LUN {other} too; only read-only LUNs may share an image")]
    SameImage {
        /// LUN number.
        index: usize,
        /// The LUN that has it already.
        other: usize,
        /// Path.
        path: String,
    },
    /// `,direct` on a host whose logical blocks are larger than the LUN's.
    #[error("LUN {index} image {path}: with ',direct' the host needs I/O aligned to {required} bytes, more than the LUN's {block_size}-byte blocks; use block-size={required} or drop ',direct'")]
    DirectAlignment {
        /// LUN number.
        index: usize,
        /// Path.
        path: String,
        /// The host's offset alignment.
        required: u32,
        /// The LUN's block size.
        block_size: u32,
    },
    /// Size not a multiple of the block size.
    #[error("LUN {index} image {path} is {size} bytes, not a non-zero multiple of its {block_size}-byte blocks")]
    Size {
        /// LUN number.
        index: usize,
        /// Path.
        path: String,
        /// Size.
        size: u64,
        /// Block size.
        block_size: u32,
    },
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An 8-byte NAA 3 ("locally assigned", SPC-4 7.8.6.6.3) designator from
/// `hash`: NAA 3 needs no IEEE company identifier, unlike NAA 5 or 6.
pub fn naa_locally_assigned(hash: u64) -> u64 {
    (0x3u64 << 60) | (hash & 0x0fff_ffff_ffff_ffff)
}

/// Open every LUN of `config`, checking sizes.
pub fn open_target(config: &Args) -> Result<Target, OpenError> {
    let mut luns = Vec::new();
    // (device, inode, writable, LUN) of every image file, to find one given twice.
    let mut files: Vec<(u64, u64, bool, usize)> = Vec::new();
    for (index, lc) in config.luns.iter().enumerate() {
        let (host, name): (Box<dyn BlockHost>, String) = match &lc.image {
            Image::File(path) => {
                let f = FileBlock::open(path, lc.read_only, lc.direct).map_err(|source| {
                    OpenError::Open {
                        index,
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                let meta = std::fs::metadata(path).map_err(|source| OpenError::Open {
                    index,
                    path: path.display().to_string(),
                    source,
                })?;
                let id = (
                    std::os::unix::fs::MetadataExt::dev(&meta),
                    std::os::unix::fs::MetadataExt::ino(&meta),
                );
                // Two LUNs on one image would corrupt it (and the image lock
                // of one would refuse the other); two read-only ones are fine.
                if let Some(&(_, _, _, other)) = files
                    .iter()
                    .find(|&&(d, i, w, _)| (d, i) == id && (w || !lc.read_only))
                {
                    return Err(OpenError::SameImage {
                        index,
                        other,
                        path: path.display().to_string(),
                    });
                }
                files.push((id.0, id.1, !lc.read_only, index));
                // Every request is a whole number of LUN blocks at a block
                // boundary: aligned for O_DIRECT when the host's blocks are
                // no larger.
                if let Some(align) = f.direct_align() {
                    if align.offset > lc.block_size {
                        return Err(OpenError::DirectAlignment {
                            index,
                            path: path.display().to_string(),
                            required: align.offset,
                            block_size: lc.block_size,
                        });
                    }
                }
                let name = std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string();
                (Box::new(f), name)
            }
            Image::Memory(size) => {
                let size = usize::try_from(*size).map_err(|e| OpenError::Open {
                    index,
                    path: "memory".into(),
                    source: io::Error::other(e),
                })?;
                (Box::new(MemBlock::new(size)), format!("mem{index}"))
            }
        };
        let size = host.size();
        if size == 0 || size % u64::from(lc.block_size) != 0 {
            return Err(OpenError::Size {
                index,
                path: host.name(),
                size,
                block_size: lc.block_size,
            });
        }
        let path_hash = fnv(format!("{name}#{index}").as_bytes());
        let serial = lc
            .serial
            .clone()
            .unwrap_or_else(|| format!("VHD{:012X}", path_hash & 0xffff_ffff_ffff));
        // The WWN follows the serial, so a disk given `serial=` keeps its
        // identity when its image moves.
        let id_hash = match &lc.serial {
            Some(s) => fnv(s.as_bytes()),
            None => path_hash,
        };
        luns.push(Lun {
            host,
            block_size: lc.block_size,
            read_only: lc.read_only,
            rotational: lc.rotational,
            serial,
            naa: naa_locally_assigned(id_hash),
            max_transfer_blocks: u32::try_from(
                u64::from(config.max_sectors) * 512 / u64::from(lc.block_size),
            )
            .unwrap_or(u32::MAX)
            .max(1),
            write_back_failed: Default::default(),
            lock: Default::default(),
        });
    }
    Ok(Target { luns })
}

/// One virtio-scsi device (fresh per front-end connection; the LUNs are shared).
pub struct ScsiDevice {
    target: Arc<Target>,
    request_queues: usize,
    config: Mutex<Config>,
    cdb_size: AtomicU32,
    sense_size: AtomicU32,
    queues: Vec<Mutex<QueueState>>,
    /// Request queues whose rings run (bit k: request queue k), for the
    /// image locks: taken when the first starts, dropped when the last
    /// stops (`GET_VRING_BASE`: a migration source hands the images over).
    running: Mutex<u64>,
    inflight: InFlight,
    tmfs: Mutex<Vec<PendingTmf>>,
}

impl ScsiDevice {
    /// A device over `target` with the queue and limit settings of `args`.
    pub fn new(target: Arc<Target>, args: &Args) -> io::Result<Self> {
        let request_queues = args.num_queues as usize;
        let config = Config {
            num_queues: args.num_queues.into(),
            seg_max: (u32::try_from(MAX_QUEUE_SIZE).unwrap_or(u32::MAX) - 2).into(),
            max_sectors: args.max_sectors.into(),
            cmd_per_lun: args.cmd_per_lun.into(),
            event_info_size: 16.into(),
            sense_size: SENSE_SIZE.into(),
            cdb_size: CDB_SIZE.into(),
            max_channel: 0.into(),
            max_target: 0.into(),
            max_lun: (u32::try_from(target.luns.len())
                .unwrap_or(1)
                .saturating_sub(1))
            .into(),
        };
        Ok(Self {
            target,
            request_queues,
            config: Mutex::new(config),
            cdb_size: AtomicU32::new(CDB_SIZE),
            sense_size: AtomicU32::new(SENSE_SIZE),
            queues: (0..request_queues)
                .map(|_| QueueState::new(args.engine).map(Mutex::new))
                .collect::<io::Result<_>>()?,
            running: Mutex::new(0),
            inflight: InFlight::new(request_queues)?,
            tmfs: Mutex::new(Vec::new()),
        })
    }

    /// Serve the control queue: notification requests at once, task
    /// management once the commands it covers have completed.
    fn serve_control(&self, ctx: &QueueContext<'_>, vring: &Vring) -> Result<(), HostError> {
        drain_chains(ctx, CONTROL_QUEUE, vring, |chain| {
            let action = match request::control(&self.target, &mut chain.reader, &mut chain.writer)
            {
                Ok(Control::Answered(n)) => return Ok(Completion::Used(n)),
                Ok(Control::Tmf(action)) => action,
                Err(e) => {
                    ctx.log.warn("bad control request", &e);
                    return Ok(Completion::Used(0));
                }
            };
            let response = match action {
                TmfAction::Answer(code) => code,
                TmfAction::Query(scope) => {
                    if self.inflight.covered(scope).is_empty() {
                        response::FUNCTION_COMPLETE
                    } else {
                        response::FUNCTION_SUCCEEDED
                    }
                }
                TmfAction::WaitFor(scope) => {
                    self.inflight.wait_begin();
                    let covered = self.inflight.covered(scope);
                    if covered.is_empty() {
                        self.inflight.wait_end();
                        response::FUNCTION_COMPLETE
                    } else {
                        vhost_device_common::lock(&self.tmfs).push(PendingTmf {
                            chain: chain.hold(),
                            covered,
                            response: response::FUNCTION_COMPLETE,
                        });
                        return Ok(Completion::Held);
                    }
                }
            };
            Ok(Completion::Used(u32::from(
                chain.writer.write_all(&[response]).is_ok(),
            )))
        })?;
        // Commands may have finished while the TMFs were being registered.
        self.complete_tmfs(ctx)
    }

    /// Answer every waiting TMF whose commands have all completed.
    fn complete_tmfs(&self, ctx: &QueueContext<'_>) -> Result<(), HostError> {
        let mut tmfs = vhost_device_common::lock(&self.tmfs);
        let mut waiting = Vec::new();
        for tmf in tmfs.drain(..) {
            if self.inflight.any_left(&tmf.covered) {
                waiting.push(tmf);
                continue;
            }
            let response = tmf.response;
            match ctx.complete(tmf.chain, |_, w| {
                Ok(u32::from(w.write_all(&[response]).is_ok()))
            })? {
                // The control queue is stopped: answer when it runs again.
                Some(chain) => waiting.push(PendingTmf {
                    chain,
                    covered: Vec::new(),
                    response,
                }),
                None => self.inflight.wait_end(),
            }
        }
        *tmfs = waiting;
        Ok(())
    }

    /// Serve request queue `k` (queue number `queue`).
    fn serve_requests(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        k: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let Some(state) = self.queues.get(k) else {
            return Ok(());
        };
        if vring.get_ref().get_queue().ready() {
            self.ring_started(k);
        }
        let mut guard = vhost_device_common::lock(state);
        let st = &mut *guard;
        self.publish_unpublished(ctx, k, st)?;
        let sizes = self.sizes();
        // A synchronous command is on the used ring once the next is handed
        // out (or the drain returned): only then is it no longer in flight.
        let mut published = None;
        let result = drain_chains(ctx, queue, vring, |chain| {
            if let Some(id) = published.take() {
                self.inflight.finish(k, id);
            }
            let hdr = match request::command_header(&mut chain.reader) {
                Ok(hdr) => hdr,
                Err(e) => {
                    ctx.log.warn("bad command request", &e);
                    return Ok(Completion::Used(0));
                }
            };
            let lun = match decode_lun(&hdr.lun) {
                Some((0, lun)) => lun,
                _ => u16::MAX,
            };
            let id = self.inflight.start(k, lun, hdr.tag.to_native());
            let (reader, writer) = (&mut chain.reader, &mut chain.writer);
            let cmd = request::command(&self.target, sizes, &hdr, reader, writer, &mut st.scratch);
            let p = match cmd {
                Ok(Command::Done(n)) => {
                    published = Some(id);
                    return Ok(Completion::Used(n));
                }
                Ok(Command::Io(p)) => p,
                Err(e) => {
                    ctx.log.warn("bad command request", &e);
                    published = Some(id);
                    return Ok(Completion::Used(0));
                }
            };
            let Some(unit) = self.target.luns.get(p.lun) else {
                published = Some(id);
                return Ok(Completion::Used(0));
            };
            if let (Some(ring), Some(fd)) = (st.uring.as_mut(), unit.host.fd()) {
                // What the page cache can serve at once needs no ring
                // round trip (a FUA write must wait for its flush anyway).
                if matches!(p.io.op, IoOp::Read | IoOp::Write { fua: false }) {
                    if let Some(n) = nowait(unit, &p, chain, &mut st.bufs) {
                        published = Some(id);
                        return Ok(Completion::Used(n));
                    }
                }
                let align = unit.host.dio_align().map_or(1, |(memory, _)| memory);
                match ring.prepare(&p.io, p.skip, align, |bufs| chain.buffers(bufs)) {
                    Ok(Some(prepared)) => {
                        let token = Token {
                            chain: chain.hold(),
                            pending: p,
                            id,
                        };
                        ring.launch(prepared, fd, &p.io, cdb::may_flush(unit), token)?;
                        return Ok(Completion::Held);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        ctx.log.warn("bad command buffers", &e);
                        published = Some(id);
                        return Ok(Completion::Used(0));
                    }
                }
            }
            // The synchronous engine (or buffers the ring cannot take).
            let outcome = match chain.buffers(&mut st.bufs) {
                Ok(()) => cdb::run_sync(unit, &p.io, &st.bufs, p.skip),
                Err(e) => {
                    ctx.log.warn("bad command buffers", &e);
                    Outcome::check(request::sense::READ_ERROR)
                }
            };
            st.bufs.clear();
            published = Some(id);
            Ok(Completion::Used(
                request::finish(&p, outcome, &mut chain.writer).unwrap_or(0),
            ))
        });
        if let Some(id) = published {
            self.inflight.finish(k, id);
        }
        result?;
        if let Some(ring) = st.uring.as_mut() {
            ring.submit()?;
        }
        // Reads from the page cache are often complete already.
        self.reap(ctx, k, st, false)
    }

    /// Complete every I/O the ring of queue `k` finished (`signalled`: for
    /// its eventfd's event).
    fn reap(
        &self,
        ctx: &QueueContext<'_>,
        k: usize,
        st: &mut QueueState,
        signalled: bool,
    ) -> Result<(), HostError> {
        let QueueState {
            uring, unpublished, ..
        } = st;
        let Some(ring) = uring.as_mut() else {
            return Ok(());
        };
        let mut batch = Published::default();
        ring.reap(signalled, |f| {
            if !batch.failed() {
                batch.record(self.complete_io(ctx, k, f, unpublished));
            }
        });
        batch.signal(ctx, FIRST_REQUEST_QUEUE + k)
    }

    /// Answer one finished I/O on the used ring (or keep it if its queue
    /// cannot take it now), without signalling the driver: true when it
    /// went on the used ring.
    fn complete_io(
        &self,
        ctx: &QueueContext<'_>,
        k: usize,
        f: Finished<'_, Token>,
        unpublished: &mut Vec<Unpublished>,
    ) -> Result<bool, HostError> {
        let Token { chain, pending, id } = f.token;
        let outcome = match self.target.luns.get(pending.lun) {
            Some(lun) => io_done(lun, &pending, f.bufs, f.transfer, f.flush),
            None => Outcome::check(request::sense::READ_ERROR),
        };
        self.publish(
            ctx,
            k,
            Unpublished {
                chain,
                pending,
                outcome,
                id,
            },
            unpublished,
        )
    }

    /// Put a finished command on the used ring, without signalling the
    /// driver (the caller signals once for a batch): true when it went on
    /// the ring, false when its queue cannot take it now (kept in
    /// `unpublished`).
    fn publish(
        &self,
        ctx: &QueueContext<'_>,
        k: usize,
        u: Unpublished,
        unpublished: &mut Vec<Unpublished>,
    ) -> Result<bool, HostError> {
        let Unpublished {
            chain,
            pending,
            outcome,
            id,
        } = u;
        let back = ctx.complete_unsignalled(chain, |_, w| {
            Ok(request::finish(&pending, outcome, w).unwrap_or(0))
        })?;
        match back {
            Some(chain) => {
                unpublished.push(Unpublished {
                    chain,
                    pending,
                    outcome,
                    id,
                });
                Ok(false)
            }
            None => {
                self.inflight.finish(k, id);
                Ok(true)
            }
        }
    }

    fn publish_unpublished(
        &self,
        ctx: &QueueContext<'_>,
        k: usize,
        st: &mut QueueState,
    ) -> Result<(), HostError> {
        let waiting = std::mem::take(&mut st.unpublished);
        let mut batch = Published::default();
        for u in waiting {
            batch.record(self.publish(ctx, k, u, &mut st.unpublished));
            if batch.failed() {
                break;
            }
        }
        batch.signal(ctx, FIRST_REQUEST_QUEUE + k)
    }

    /// Request queue `k`'s ring runs (it was kicked).
    fn ring_started(&self, k: usize) {
        let mut running = vhost_device_common::lock(&self.running);
        if *running & (1 << k) == 0 {
            if *running == 0 {
                self.target.acquire_all();
            }
            *running |= 1 << k;
            // TMFs restored from a migration state can be answered now
            // that the rings run again.
            if !vhost_device_common::lock(&self.tmfs).is_empty() {
                let _ = self.inflight.wake_fd().write(1);
            }
        }
    }

    /// Request queue `k`'s ring stopped, and none of its commands runs.
    fn ring_stopped(&self, k: usize) {
        let mut running = vhost_device_common::lock(&self.running);
        if *running & (1 << k) != 0 {
            *running &= !(1 << k);
            if *running == 0 {
                self.target.release_all();
            }
        }
    }

    fn sizes(&self) -> Sizes {
        Sizes {
            cdb: self.cdb_size.load(Ordering::Acquire) as usize,
            sense: self.sense_size.load(Ordering::Acquire) as usize,
        }
    }
}

impl Drop for ScsiDevice {
    fn drop(&mut self) {
        // The front end left: the images are free for the next user.
        if *vhost_device_common::lock(&self.running) != 0 {
            self.target.release_all();
        }
    }
}

/// Finished commands put on one queue's used ring together (an io_uring
/// reap), signalled to the driver once at the end.
#[derive(Default)]
struct Published {
    any: bool,
    failed: Option<HostError>,
}

impl Published {
    /// The outcome of putting one command on the ring (true: it went on).
    fn record(&mut self, outcome: Result<bool, HostError>) {
        match outcome {
            Ok(published) => self.any |= published,
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(e);
                }
            }
        }
    }

    fn failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Signal the driver once for everything published, even when a later
    /// command failed (the worker ends then), and report the failure.
    fn signal(self, ctx: &QueueContext<'_>, queue: usize) -> Result<(), HostError> {
        if self.any {
            ctx.signal(queue)?;
        }
        self.failed.map_or(Ok(()), Err)
    }
}

/// What a destination scsi daemon takes over: the config fields the driver
/// wrote. The LUNs themselves are the image files, opened by both daemons;
/// the target keeps no per-initiator state (no reservations, no pending unit
/// attentions, the write cache is always on), so there is nothing else.
/// QEMU migrates vhost-user-scsi without asking for a device state; front
/// ends that do (Cloud Hypervisor) get this.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// `cdb_size` as the driver set it.
    pub cdb_size: u32,
    /// `sense_size` as the driver set it.
    pub sense_size: u32,
    /// Task management functions not answered yet (held on the control
    /// queue). Every command was complete when the source stopped its
    /// queues, so the destination answers them FUNCTION COMPLETE.
    pub tmfs: Vec<HeldChain>,
}

impl VirtioDevice for ScsiDevice {
    type State = State;
    const STATE_VERSION: u16 = 2;

    fn save_state(&self) -> Result<State, HostError> {
        let sizes = self.sizes();
        // Clones of the held chains (they serialize as queue and head): the
        // source keeps its own, so it can go on if the migration fails.
        let saved = vhost_device_common::lock(&self.tmfs)
            .iter()
            .map(|tmf| tmf.chain.clone())
            .collect();
        Ok(State {
            cdb_size: u32::try_from(sizes.cdb)?,
            sense_size: u32::try_from(sizes.sense)?,
            tmfs: saved,
        })
    }

    fn load_state(&self, state: State) -> Result<(), HostError> {
        if state.sense_size > SENSE_SIZE || !(16..=CDB_SIZE).contains(&state.cdb_size) {
            return Err(format!(
                "saved cdb_size {} / sense_size {} are outside what this daemon supports",
                state.cdb_size, state.sense_size
            )
            .into());
        }
        let mut config = vhost_device_common::lock(&self.config);
        config.cdb_size = state.cdb_size.into();
        config.sense_size = state.sense_size.into();
        self.cdb_size.store(state.cdb_size, Ordering::Release);
        self.sense_size.store(state.sense_size, Ordering::Release);
        let mut tmfs = vhost_device_common::lock(&self.tmfs);
        for chain in state.tmfs {
            self.inflight.wait_begin();
            tmfs.push(PendingTmf {
                chain,
                covered: Vec::new(),
                response: response::FUNCTION_COMPLETE,
            });
        }
        Ok(())
    }

    fn num_queues(&self) -> usize {
        FIRST_REQUEST_QUEUE + self.request_queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn config(&self) -> Vec<u8> {
        vhost_device_common::lock(&self.config).as_slice().to_vec()
    }

    fn write_config(&self, offset: u32, data: &[u8]) -> Result<(), ConfigError> {
        let mut config = vhost_device_common::lock(&self.config);
        let mut bytes = config.as_slice().to_vec();
        config_space::write(&mut bytes, CONFIG_WRITABLE, offset, data)?;
        let new = Config::from_slice(&bytes).copied().unwrap_or(*config);
        let (sense, cdb) = (new.sense_size.to_native(), new.cdb_size.to_native());
        // Larger sizes than the defaults are not supported; smaller ones are
        // honoured (the CDB must still hold the longest command, 16 bytes).
        if sense > SENSE_SIZE || !(16..=CDB_SIZE).contains(&cdb) {
            return Err(ConfigError::ReadOnly {
                offset,
                end: offset as usize + data.len(),
            });
        }
        *config = new;
        self.sense_size.store(sense, Ordering::Release);
        self.cdb_size.store(cdb, Ordering::Release);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // Worker 0: control and event queues, so that task management is
        // never stuck behind a command; then one worker per request queue.
        let mut masks = vec![(1u64 << CONTROL_QUEUE) | (1u64 << EVENT_QUEUE)];
        masks.extend((0..self.request_queues).map(|k| 1u64 << (FIRST_REQUEST_QUEUE + k)));
        masks
    }

    fn stop_vring(&self, queue: usize) -> io::Result<()> {
        // The queue's worker never ran: nothing is in flight.
        if let Some(k) = queue.checked_sub(FIRST_REQUEST_QUEUE) {
            self.ring_stopped(k);
        }
        Ok(())
    }

    fn stop_queue(&self, ctx: &QueueContext<'_>, queue: usize) -> Result<(), HostError> {
        let Some(k) = queue.checked_sub(FIRST_REQUEST_QUEUE) else {
            return Ok(());
        };
        // Synchronous commands finished: the drain holds the vring lock,
        // which the library took to mark the ring stopped before this call.
        // I/O on the ring is waited for and answered now, before
        // GET_VRING_BASE is: QEMU migrates no in-flight requests.
        if let Some(state) = self.queues.get(k) {
            let mut guard = vhost_device_common::lock(state);
            let st = &mut *guard;
            self.publish_unpublished(ctx, k, st)?;
            let QueueState {
                uring, unpublished, ..
            } = st;
            if let Some(ring) = uring.as_mut() {
                let mut batch = Published::default();
                ring.wait_all(|f| {
                    if !batch.failed() {
                        batch.record(self.complete_io(ctx, k, f, unpublished));
                    }
                })?;
                batch.signal(ctx, queue)?;
            }
        }
        self.ring_stopped(k);
        Ok(())
    }

    fn reset(&self) {
        *vhost_device_common::lock(&self.running) = 0;
        self.target.release_all();
        // The rings are gone, and the TMFs held on them.
        for _ in vhost_device_common::lock(&self.tmfs).drain(..) {
            self.inflight.wait_end();
        }
    }

    fn attach(&self, events: HostEvents) -> io::Result<()> {
        // Worker 0 serves the control queue.
        events.add(0, self.inflight.wake_fd().as_fd(), EventSet::IN, TOKEN_TMF)?;
        // Worker 1 + k serves request queue k and reaps its ring.
        for (k, state) in self.queues.iter().enumerate() {
            if let Some(ring) = vhost_device_common::lock(state).uring.as_ref() {
                let token = u16::try_from(1 + k).map_err(io::Error::other)?;
                events.add(1 + k, ring.eventfd(), EventSet::IN, token)?;
            }
        }
        Ok(())
    }

    fn host_event(
        &self,
        ctx: &QueueContext<'_>,
        token: u16,
        _events: EventSet,
        _vrings: &[Option<&Vring>],
    ) -> Result<(), HostError> {
        if token == TOKEN_TMF {
            self.inflight.clear_wake();
            return self.complete_tmfs(ctx);
        }
        let k = usize::from(token) - 1;
        if let Some(state) = self.queues.get(k) {
            let mut guard = vhost_device_common::lock(state);
            self.reap(ctx, k, &mut guard, true)?;
        }
        Ok(())
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        match queue {
            CONTROL_QUEUE => self.serve_control(ctx, vring),
            EVENT_QUEUE => Ok(()),
            q => self.serve_requests(ctx, q, q - FIRST_REQUEST_QUEUE, vring),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::LunConfig;

    fn config_for(path: &std::path::Path, serial: Option<&str>) -> Args {
        Args {
            luns: vec![LunConfig {
                image: Image::File(path.into()),
                read_only: false,
                rotational: false,
                block_size: 512,
                direct: false,
                serial: serial.map(Into::into),
            }],
            num_queues: 1,
            max_sectors: 0xffff,
            cmd_per_lun: 128,
            engine: Engine::Sync,
        }
    }

    fn naa_of(path: &std::path::Path, serial: Option<&str>) -> u64 {
        open_target(&config_for(path, serial)).unwrap().luns[0].naa
    }

    #[test]
    fn pending_tmf_is_saved_without_leaving_the_source_and_loaded_on_the_destination() {
        use vhost_device_common::queue::drain_chains;
        use vhost_device_common::testing::{TestQueue, BUFFERS};
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let args = config_for(&img, None);
        let target = Arc::new(open_target(&args).unwrap());
        let (source, dest) = (
            ScsiDevice::new(target.clone(), &args).unwrap(),
            ScsiDevice::new(target, &args).unwrap(),
        );
        let mut q = TestQueue::new(16, false).unwrap();
        q.add(&[(BUFFERS, 24, false), (BUFFERS + 0x100, 1, true)])
            .unwrap();
        drain_chains(&q.context(), 0, &q.vring, |chain| {
            vhost_device_common::lock(&source.tmfs).push(PendingTmf {
                chain: chain.hold(),
                covered: Vec::new(),
                response: response::FUNCTION_COMPLETE,
            });
            Ok(Completion::Held)
        })
        .unwrap();

        let state = source.save_state().unwrap();
        dest.load_state(state).unwrap();

        assert_eq!(vhost_device_common::lock(&source.tmfs).len(), 1);
        assert_eq!(vhost_device_common::lock(&dest.tmfs).len(), 1);
    }

    #[test]
    fn one_image_for_two_luns_is_refused_unless_both_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let mut args = config_for(&img, None);
        args.luns.push(args.luns[0].clone());
        let mut ro = args.clone();
        ro.luns.iter_mut().for_each(|l| l.read_only = true);

        let twice = open_target(&args).map(|_| ()).unwrap_err().to_string();

        assert!(twice.contains("image of LUN 0"), "{twice}");
        assert!(open_target(&ro).is_ok());
    }

    #[test]
    fn control_queue_has_a_worker_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        std::fs::write(&img, vec![0u8; 4096]).unwrap();
        let mut args = config_for(&img, None);
        args.num_queues = 2;
        let dev = ScsiDevice::new(Arc::new(open_target(&args).unwrap()), &args).unwrap();

        let masks = dev.queues_per_thread();

        let control = masks.iter().find(|&&m| m & 1 != 0).unwrap();
        assert_eq!(control & !0b11, 0, "control worker also serves requests");
        assert_eq!(masks.len(), 3);
    }

    #[test]
    fn wwn_follows_the_serial_when_the_image_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        std::fs::write(&a, vec![0u8; 4096]).unwrap();
        let before = naa_of(&a, Some("DISK1"));
        std::fs::rename(&a, &b).unwrap();

        let after = naa_of(&b, Some("DISK1"));

        assert_eq!(before, after);
        assert_eq!(after >> 60, 3, "NAA 3");
    }
}
