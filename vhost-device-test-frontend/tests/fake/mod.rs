// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A fake one-queue vhost-user device served in-process by vhost-user-backend,
//! for testing the front end itself without any daemon: it completes every
//! chain (filling its writable bytes, or with used length 0), keeps a count of
//! chains served as its "device state" (DEVICE_STATE blob: `FAKE`, version 1,
//! the count), logs dirty pages, and hands the test its backend-request channel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
    VhostUserShMemConfig, VhostUserVirtioFeatures,
};
use vhost::vhost_user::Backend;
use vhost_user_backend::bitmap::BitmapMmapRegion;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

type Mem = GuestMemoryAtomic<GuestMemoryMmap<BitmapMmapRegion>>;

const MAGIC: &[u8; 4] = b"FAKE";
const VERSION: u32 = 1;

/// What the fake does with each chain.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Fill every writable byte with this value.
    Fill(u8),
    /// Complete with used length 0.
    Nothing,
}

/// How the fake is built.
#[derive(Debug, Clone)]
pub struct Config {
    pub answer: Answer,
    /// Offer DEVICE_STATE.
    pub device_state: bool,
    /// Shared memory region sizes for GET_SHMEM_CONFIG (SHMEM is offered when
    /// not empty).
    pub shmem: Vec<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            answer: Answer::Fill(0xAB),
            device_state: true,
            shmem: Vec::new(),
        }
    }
}

#[derive(Default)]
struct State {
    served: u64,
    transfer: Option<JoinHandle<io::Result<Option<u64>>>>,
    backend: Option<Backend>,
}

pub struct FakeDevice {
    config: Config,
    mem: Mem,
    state: Mutex<State>,
    changed: Condvar,
}

impl FakeDevice {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Chains completed so far (including ones loaded from a migration blob).
    pub fn served(&self) -> u64 {
        self.lock().served
    }

    /// The backend-request channel: wait up to `timeout` for the front end's
    /// `SET_BACKEND_REQ_FD` (it asks for no reply, so it may still be on its
    /// way when the session has started).
    pub fn backend(&self, timeout: Duration) -> Option<Backend> {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.backend.is_none())
            .unwrap();
        state.backend.clone()
    }

    fn serve_queue(&self, vring: &VringRwLock<Mem>) -> io::Result<()> {
        let mem = self.mem.memory();
        let mut vring = vring.get_mut();
        let mut served = 0;
        while let Some(chain) = vring.get_queue_mut().pop_descriptor_chain(mem.clone()) {
            let head = chain.head_index();
            let len = match self.config.answer {
                Answer::Nothing => 0,
                Answer::Fill(byte) => {
                    let mut w =
                        virtio_queue::Writer::new(&*mem, chain).map_err(io::Error::other)?;
                    let n = w.available_bytes();
                    w.write_all(&vec![byte; n])?;
                    u32::try_from(n).map_err(io::Error::other)?
                }
            };
            vring.add_used(head, len).map_err(io::Error::other)?;
            served += 1;
        }
        self.lock().served += served;
        if served > 0 {
            vring.signal_used_queue()?;
        }
        Ok(())
    }
}

fn parse(blob: &[u8]) -> io::Result<u64> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if blob.len() != 16 || &blob[..4] != MAGIC {
        return Err(bad("not a fake device state"));
    }
    let version = u32::from_le_bytes(blob[4..8].try_into().unwrap());
    if version != VERSION {
        return Err(bad("unknown state version"));
    }
    Ok(u64::from_le_bytes(blob[8..16].try_into().unwrap()))
}

impl VhostUserBackend for FakeDevice {
    type Bitmap = BitmapMmapRegion;
    type Vring = VringRwLock<Mem>;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        1024
    }

    fn features(&self) -> u64 {
        (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | VhostUserVirtioFeatures::LOG_ALL.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let mut f = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::BACKEND_REQ
            | VhostUserProtocolFeatures::LOG_SHMFD
            | VhostUserProtocolFeatures::SHARED_OBJECT;
        if self.config.device_state {
            f |= VhostUserProtocolFeatures::DEVICE_STATE;
        }
        if !self.config.shmem.is_empty() {
            f |= VhostUserProtocolFeatures::SHMEM;
        }
        f
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        Ok(())
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        self.lock().backend = Some(backend);
        self.changed.notify_all();
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        match (device_event, vrings.first()) {
            (0, Some(vring)) => self.serve_queue(vring),
            _ => Ok(()),
        }
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        let n = u32::try_from(self.config.shmem.len()).unwrap();
        Ok(VhostUserShMemConfig::new(n, &self.config.shmem))
    }

    fn set_device_state_fd(
        &self,
        direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        mut file: File,
    ) -> io::Result<Option<File>> {
        let mut state = self.lock();
        // The transfer runs on its own thread: the front end writes or reads
        // the pipe only after this request is answered.
        state.transfer = Some(match direction {
            VhostTransferStateDirection::SAVE => {
                let mut blob = MAGIC.to_vec();
                blob.extend_from_slice(&VERSION.to_le_bytes());
                blob.extend_from_slice(&state.served.to_le_bytes());
                std::thread::spawn(move || file.write_all(&blob).map(|()| None))
            }
            VhostTransferStateDirection::LOAD => std::thread::spawn(move || {
                let mut blob = Vec::new();
                file.read_to_end(&mut blob)?;
                parse(&blob).map(Some)
            }),
        });
        Ok(None)
    }

    fn check_device_state(&self) -> io::Result<()> {
        let transfer = self.lock().transfer.take();
        let loaded = transfer
            .ok_or_else(|| io::Error::other("no transfer"))?
            .join()
            .map_err(|_| io::Error::other("transfer thread panicked"))??;
        if let Some(served) = loaded {
            self.lock().served = served;
        }
        Ok(())
    }
}

/// A fake device serving one front-end connection on a socket in a
/// temporary directory.
pub struct FakeServer {
    pub socket: PathBuf,
    pub device: Arc<FakeDevice>,
    _dir: tempfile::TempDir,
}

pub fn serve(config: Config) -> FakeServer {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let mem: Mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let device = Arc::new(FakeDevice {
        config,
        mem: mem.clone(),
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    });
    let mut daemon = VhostUserDaemon::new("fake".into(), device.clone(), mem).unwrap();
    let path = socket.clone();
    // Serves one connection and ends when the front end disconnects; the
    // front end's connect retries until the socket exists.
    std::thread::spawn(move || {
        if let Err(e) = daemon.serve(&path) {
            eprintln!("fake device: {e}");
        }
    });
    FakeServer {
        socket,
        device,
        _dir: dir,
    }
}
