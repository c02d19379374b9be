// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One thread per adapter, so that a slow bus never blocks a vring worker.
//!
//! An I2C transfer is a blocking ioctl that lasts as long as the bus takes
//! (clock stretching, a 100 kHz bus and 8 KiB, a client that holds SCL).
//! The device therefore hands each transfer to its adapter's
//! [`AdapterWorker`] and goes on; the worker runs it and posts the outcome
//! to the device's [`Mailbox`], whose eventfd sits in the device's worker
//! epoll. Every device that uses the adapter shares the thread, which
//! serialises their transfers as the bus itself would.
//!
//! Bounded: each device has at most one transfer in flight, so a worker's
//! queue holds at most one job per device. The thread starts with the first
//! job (after the daemon has blocked its termination signals, which it
//! inherits) and lives as long as the process.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use vhost_device_common::lock;

use super::{Adapter, Msg, TransferError};

/// A transfer to run.
#[derive(Debug)]
pub struct Job {
    /// The device's number for this transfer.
    pub seq: u64,
    /// The messages (read buffers sized, to be filled).
    pub msgs: Vec<Msg>,
    /// Where the outcome goes.
    pub reply: Arc<Mailbox>,
}

/// What became of a [`Job`].
#[derive(Debug)]
pub struct Outcome {
    /// The [`Job::seq`] it answers.
    pub seq: u64,
    /// The messages, read buffers filled as far as the transfer got.
    pub msgs: Vec<Msg>,
    /// How many messages completed, or why none did.
    pub result: Result<usize, TransferError>,
}

/// Where a device receives the outcome of its transfer in flight.
#[derive(Debug)]
pub struct Mailbox {
    slot: Mutex<Option<Outcome>>,
    ready: Condvar,
    event: EventFd,
}

impl Mailbox {
    /// An empty mailbox with a non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            slot: Mutex::new(None),
            ready: Condvar::new(),
            event: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// Deliver an outcome and signal the eventfd.
    pub fn post(&self, outcome: Outcome) {
        *lock(&self.slot) = Some(outcome);
        self.ready.notify_all();
        self.kick();
    }

    /// Make the eventfd readable (also used to have the device look at its
    /// work again, after a state was loaded).
    pub fn kick(&self) {
        if let Err(e) = self.event.write(1) {
            log::error!("cannot signal a transfer's completion: {e}");
        }
    }

    /// The outcome, if one arrived.
    pub fn take(&self) -> Option<Outcome> {
        lock(&self.slot).take()
    }

    /// Wait up to `timeout` for the outcome (the vhost-user thread saving a
    /// state while a transfer runs).
    pub fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut slot = lock(&self.slot);
        loop {
            if let Some(o) = slot.take() {
                return Some(o);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            slot = match self.ready.wait_timeout(slot, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Consume the eventfd's count (non-blocking).
    pub fn clear(&self) {
        let _ = self.event.read();
    }

    /// The eventfd, for the worker epoll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }
}

/// An adapter and its thread.
#[derive(Debug)]
pub struct AdapterWorker {
    adapter: Arc<Mutex<Adapter>>,
    jobs: Mutex<Option<Sender<Job>>>,
    name: String,
}

impl AdapterWorker {
    /// Serve `adapter` (its thread starts with the first job).
    pub fn new(adapter: Adapter) -> Self {
        let name = adapter.name().to_owned();
        Self {
            adapter: Arc::new(Mutex::new(adapter)),
            jobs: Mutex::new(None),
            name,
        }
    }

    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the adapter is SMBus-only.
    pub fn smbus_only(&self) -> bool {
        lock(&self.adapter).smbus_only()
    }

    /// Queue `job`; its outcome arrives in its mailbox.
    pub fn submit(&self, job: Job) -> io::Result<()> {
        let mut jobs = lock(&self.jobs);
        let sender = match jobs.as_ref() {
            Some(s) => s.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<Job>();
                let adapter = self.adapter.clone();
                thread::Builder::new()
                    .name("i2c-adapter".into())
                    .spawn(move || {
                        for job in rx {
                            let mut msgs = job.msgs;
                            let result = lock(&adapter).transfer(&mut msgs);
                            job.reply.post(Outcome {
                                seq: job.seq,
                                msgs,
                                result,
                            });
                        }
                    })?;
                *jobs = Some(tx.clone());
                tx
            }
        };
        sender
            .send(job)
            .map_err(|_| io::Error::other(format!("the thread of {} has ended", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mock::MockBus;
    use crate::host::{func, I2cBus};

    #[test]
    fn job_runs_on_the_adapter_thread_and_signals_the_mailbox() {
        let bus = MockBus::new(func::I2C);
        let worker = AdapterWorker::new(Adapter::new(Box::new(bus.clone())).unwrap());
        let mailbox = Arc::new(Mailbox::new().unwrap());

        worker
            .submit(Job {
                seq: 1,
                msgs: vec![Msg::write(0x50, &[0]), Msg::read(0x50, 2)],
                reply: mailbox.clone(),
            })
            .unwrap();
        let outcome = mailbox.wait(Duration::from_secs(10)).expect("outcome");

        assert_eq!(outcome.result.unwrap(), 2);
        assert_eq!(outcome.msgs[1].buf, vec![0xa1, 0xa1]);
        mailbox.clear();
        assert!(mailbox.take().is_none());
    }

    #[test]
    fn wait_gives_up_after_its_timeout() {
        let mailbox = Mailbox::new().unwrap();
        assert!(mailbox.wait(Duration::from_millis(10)).is_none());
    }

    #[test]
    fn smbus_only_adapter_is_reported() {
        let mut bus = MockBus::new(func::SMBUS_EMUL);
        assert_eq!(bus.funcs().unwrap(), func::SMBUS_EMUL);
        let worker = AdapterWorker::new(Adapter::new(Box::new(bus)).unwrap());
        assert!(worker.smbus_only());
    }
}
