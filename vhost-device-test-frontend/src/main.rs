// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-device-test-frontend`: poke a vhost-user back end by hand.
//!
//! ```text
//! vhost-device-test-frontend --socket-path /tmp/rng.sock info
//! vhost-device-test-frontend --socket-path /tmp/rng.sock read --bytes 64
//! vhost-device-test-frontend --socket-path /tmp/vsock.sock vsock-send --port 1234 --bytes 1048576
//! echo names | vhost-device-test-frontend --socket-path /tmp/gpio.sock gpio
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vhost_device_test_frontend::vsock::VsockGuest;
use vhost_device_test_frontend::{Chain, Error, Options, Session};

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
    /// write them to stdout as hex
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
    /// Play a virtio-gpio driver: read commands from stdin, one a line, and
    /// answer each on stdout (`ok …` or `err …`; see
    /// `vhost_device_test_frontend::gpio`): info, names, dir, getdir, set,
    /// get, irq, arm, wait, raw
    Gpio {
        /// Give up waiting for the device after this many seconds
        #[arg(long, default_value_t = 10)]
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
            Cmd::VsockSend(_) | Cmd::VsockRecv(_) => 3,
            Cmd::Gpio { .. } => 2,
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
            let buf = s.ram().alloc(u64::from(bytes), 4096)?;
            let mut got = Vec::new();
            while got.len() < bytes as usize {
                let want = bytes - u32::try_from(got.len()).unwrap_or(bytes);
                let vq = s.queue(queue)?;
                vq.add(&Chain::new().writable(buf, want))?;
                vq.kick()?;
                let used = vq.wait_used(Duration::from_secs(10))?;
                for u in used {
                    got.extend(s.ram().read(buf, u.len as usize)?);
                }
            }
            let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(std::io::stdout(), "{hex}");
        }
        Cmd::Gpio { timeout } => {
            let mut g = vhost_device_test_frontend::gpio::GpioDriver::new(s)?;
            g.set_timeout(Duration::from_secs(timeout));
            let mut out = std::io::stdout();
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "quit" {
                    break;
                }
                let answer = g.command(&line);
                if writeln!(out, "{answer}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
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
    }
    Ok(())
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
