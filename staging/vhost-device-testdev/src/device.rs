// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test device on the runtime's [`VirtioDevice`] trait.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use vhost_device_common::device::VirtioDevice;
use vhost_device_common::error::HostError;
use vhost_device_common::queue::{drain_chains, Completion, HeldChain, QueueContext, Vring};

use crate::request::{parse, Command, MAX_COMMAND};

/// Size of shared memory region 0.
pub const SHMEM_SIZE: u64 = 1 << 20;
/// What `map` puts at the start of the mapped page.
pub const SHMEM_TEXT: &[u8] = b"vhost-device-testdev shared page";
/// The UUID `share` adds.
pub const SHARED_UUID: [u8; 16] = *b"testdev-object-1";

/// A page holding [`SHMEM_TEXT`], in a memfd.
fn shared_page() -> Result<std::fs::File, HostError> {
    let fd = nix::sys::memfd::memfd_create(
        c"vhost-device-testdev",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.set_len(4096)?;
    file.write_all(SHMEM_TEXT)?;
    Ok(file)
}

fn status(result: Result<(), impl std::error::Error + 'static>) -> Vec<u8> {
    match result {
        Ok(()) => b"ok".to_vec(),
        Err(e) => vhost_device_common::error::report(&e).into_bytes(),
    }
}

/// What the device keeps, and what migrates.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The config space's generation counter.
    pub generation: u32,
    /// Held requests, oldest first.
    pub held: VecDeque<HeldChain>,
}

/// The test device (fresh per connection).
#[derive(Debug, Default)]
pub struct TestDevice {
    state: Mutex<State>,
}

fn answer(
    writer: &mut vhost_device_common::queue::Writer<'_>,
    text: &[u8],
) -> Result<u32, HostError> {
    let n = text.len().min(writer.available_bytes());
    writer.write_all(&text[..n])?;
    Ok(u32::try_from(n)?)
}

impl VirtioDevice for TestDevice {
    type State = State;

    fn num_queues(&self) -> usize {
        1
    }

    fn shmem_regions(&self) -> Vec<u64> {
        vec![SHMEM_SIZE]
    }

    fn config(&self) -> Vec<u8> {
        vhost_device_common::lock(&self.state)
            .generation
            .to_le_bytes()
            .to_vec()
    }

    fn save_state(&self) -> Result<State, HostError> {
        let st = vhost_device_common::lock(&self.state);
        Ok(State {
            generation: st.generation,
            held: st.held.clone(),
        })
    }

    fn load_state(&self, state: State) -> Result<(), HostError> {
        *vhost_device_common::lock(&self.state) = state;
        Ok(())
    }

    fn reset(&self) {
        *vhost_device_common::lock(&self.state) = State::default();
    }

    fn process_queue(
        &self,
        ctx: &QueueContext<'_>,
        queue: usize,
        vring: &Vring,
    ) -> Result<(), HostError> {
        let mut st = vhost_device_common::lock(&self.state);
        let mut releases = 0usize;
        drain_chains(ctx, queue, vring, |chain| {
            let mut bytes = Vec::new();
            (&mut chain.reader)
                .take(MAX_COMMAND as u64 + 1)
                .read_to_end(&mut bytes)?;
            if bytes.len() > MAX_COMMAND {
                return Ok(Completion::Used(answer(&mut chain.writer, b"bad")?));
            }
            let text = match parse(&bytes) {
                Command::Echo(data) => data,
                Command::Hold => {
                    st.held.push_back(chain.hold());
                    return Ok(Completion::Held);
                }
                Command::Release => {
                    // Held requests complete before this one (below).
                    releases += 1;
                    st.held.push_back(chain.hold());
                    return Ok(Completion::Held);
                }
                Command::Config => {
                    st.generation = st.generation.wrapping_add(1);
                    status(ctx.backend.config_changed())
                }
                Command::Map => {
                    let page = shared_page()?;
                    status(ctx.backend.shmem_map(0, page.as_fd(), 0, 0, 4096, false))
                }
                Command::Share => status(ctx.backend.shared_object_add(&SHARED_UUID)),
                Command::Bad => b"bad".to_vec(),
            };
            Ok(Completion::Used(answer(&mut chain.writer, &text)?))
        })?;
        if releases > 0 {
            // Everything held so far, oldest first; each `release` answers with
            // how many it released.
            let mut count = 0u32;
            while let Some(held) = st.held.pop_front() {
                let back = ctx.try_complete(held, |reader, writer| {
                    let mut bytes = Vec::new();
                    reader.take(MAX_COMMAND as u64).read_to_end(&mut bytes)?;
                    if parse(&bytes) == Command::Release {
                        Ok(Some(answer(writer, count.to_string().as_bytes())?))
                    } else {
                        count += 1;
                        Ok(Some(0))
                    }
                })?;
                if let Some(held) = back {
                    st.held.push_front(held);
                    break;
                }
            }
        }
        Ok(())
    }
}
