// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-test-frontend`: poke a vhost-user back end by hand.
//!
//! ```text
//! vhost-device-test-frontend --socket-path /tmp/rng.sock info
//! vhost-device-test-frontend --socket-path /tmp/rng.sock read --bytes 64
//! vhost-device-test-frontend --socket-path /tmp/vsock.sock vsock-send --port 1234 --bytes 1048576
//! vhost-device-test-frontend --socket-path /tmp/can.sock can-send 123#DEADBEEF 123##1AABB
//! vhost-device-test-frontend --socket-path /tmp/can.sock can-recv --count 2
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vhost_device_test_frontend::can::{CanDriver, Frame, RESULT_OK};
use vhost_device_test_frontend::vsock::VsockGuest;
use vhost_device_test_frontend::{Error, Options, Session};

/// A vhost-user front end and virtio driver with no VM.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Back-end socket to connect to
    #[arg(long, value_name = "PATH")]
    socket_path: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Negotiate and print features, protocol features, queues and config space
    Info {
        /// Config-space bytes to read
        #[arg(long, default_value_t = 0)]
        config_size: u32,
    },
    /// Read bytes from a device that fills writable buffers (virtio-rng) and
    /// write them to stdout as hex; fails if the device keeps answering with
    /// nothing
    Read {
        /// How many bytes
        #[arg(long, default_value_t = 64)]
        bytes: u32,
        /// Queue to use
        #[arg(long, default_value_t = 0)]
        queue: usize,
    },
    /// Play a vsock guest: connect to host (CID 2) port PORT, send BYTES
    /// pseudo-random bytes, print `SENT <bytes> <crc32>`
    VsockSend(VsockArgs),
    /// Play a vsock guest: accept one host connection to PORT, receive BYTES,
    /// print `RECEIVED <bytes> <crc32>`
    VsockRecv(VsockArgs),
    /// Play a virtio-can driver: START the controller, send FRAMEs (cansend
    /// syntax: 123#DEADBEEF, 12345678#R4, 123##1AABB), print `SENT <frame>
    /// <result>` for each; fails unless every result is OK
    CanSend {
        /// The frames, in order
        #[arg(required = true)]
        frames: Vec<Frame>,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Play a virtio-can driver: START the controller, print `STARTED`, then
    /// `RECEIVED <frame>` for every frame until COUNT; fails on timeout
    CanRecv {
        /// How many frames
        #[arg(long)]
        count: usize,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Options of the vsock guest commands.
#[derive(clap::Args, Debug)]
struct VsockArgs {
    /// The guest's CID
    #[arg(long, default_value_t = 3)]
    guest_cid: u64,
    /// Host port (vsock-send) or guest port (vsock-recv)
    #[arg(long)]
    port: u32,
    /// How many bytes
    #[arg(long)]
    bytes: u64,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn run(args: Args) -> Result<(), Error> {
    let opts = Options {
        num_queues: Some(match args.command {
            Cmd::VsockSend(_) | Cmd::VsockRecv(_) | Cmd::CanSend { .. } | Cmd::CanRecv { .. } => 3,
            _ => 1,
        }),
        ..Options::default()
    };
    let mut s = Session::start(&args.socket_path, &opts)?;
    match args.command {
        Cmd::Info { config_size } => {
            println!("device features:   {:#018x}", s.device_features);
            println!("acked features:    {:#018x}", s.features);
            println!("protocol features: {:?}", s.protocol);
            println!("queues:            {:?}", s.max_queues);
            if config_size > 0 {
                println!("config:            {:02x?}", s.get_config(0, config_size)?);
            }
        }
        Cmd::Read { bytes, queue } => {
            let got = s.read_bytes(queue, bytes, Duration::from_secs(10))?;
            let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(std::io::stdout(), "{hex}");
        }
        Cmd::VsockSend(v) => {
            let mut g = VsockGuest::new(s, v.guest_cid)?;
            let crc = g.send_to_host(50_000, v.port, v.bytes, Duration::from_secs(v.timeout))?;
            let _ = writeln!(std::io::stdout(), "SENT {} {crc:08x}", v.bytes);
        }
        Cmd::VsockRecv(v) => {
            let mut g = VsockGuest::new(s, v.guest_cid)?;
            let crc = g.recv_from_host(v.port, v.bytes, Duration::from_secs(v.timeout))?;
            let _ = writeln!(std::io::stdout(), "RECEIVED {} {crc:08x}", v.bytes);
        }
        Cmd::CanSend { frames, timeout } => {
            let timeout = Duration::from_secs(timeout);
            let mut d = CanDriver::new(s, 16)?;
            start(&mut d, timeout)?;
            let mut failed = None;
            for f in &frames {
                let result = d.transmit(f, timeout)?;
                if result != RESULT_OK && failed.is_none() {
                    failed = Some(Error::CanNotOk {
                        what: format!("frame {f}"),
                        result,
                    });
                }
                let _ = writeln!(std::io::stdout(), "SENT {f} {result}");
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Cmd::CanRecv { count, timeout } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            let mut d = CanDriver::new(s, 64)?;
            start(&mut d, Duration::from_secs(timeout))?;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "STARTED").and_then(|()| out.flush());
            for _ in 0..count {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let f = d.recv(left)?;
                let _ = writeln!(out, "RECEIVED {f}").and_then(|()| out.flush());
            }
        }
    }
    Ok(())
}

/// START the controller of a CAN device.
fn start(d: &mut CanDriver, timeout: Duration) -> Result<(), Error> {
    match d.start(timeout)? {
        RESULT_OK => Ok(()),
        result => Err(Error::CanNotOk {
            what: "START".into(),
            result,
        }),
    }
}

fn main() -> ExitCode {
    env_logger::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("vhost-device-test-frontend: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
