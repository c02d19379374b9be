// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device on real vrings over test memory, with a scripted host. Each
//! queue is its own `TestQueue` (its own memory), so a test drives one queue
//! per context; the daemon's integration tests cover the queues together.

use super::*;
use crate::host::mock::{MockHandle, MockHost};
use crate::virtio::{
    FrameHeader, FLAG_FD, FLAG_RTR, F_CAN_CLASSIC, F_CAN_FD, F_LATE_TX_ACK, F_RTR_FRAMES,
    MSG_START, MSG_STOP, MSG_TX, STATUS_BUSOFF,
};
use vhost_device_common::queue::HeldHeads;
use vhost_device_common::testing::{TestQueue, BUFFERS};
use vhost_device_common::vm_memory::ByteValued;

const ALL: u64 =
    (1 << F_CAN_CLASSIC) | (1 << F_CAN_FD) | (1 << F_RTR_FRAMES) | (1 << F_LATE_TX_ACK);
const EARLY: u64 = (1 << F_CAN_CLASSIC) | (1 << F_CAN_FD) | (1 << F_RTR_FRAMES);

/// A device with its control queue (one ring for the device's life: a
/// ring that moves is a guest reset).
struct Dev {
    dev: CanDevice,
    ctl: std::cell::RefCell<Queue>,
}

impl std::ops::Deref for Dev {
    type Target = CanDevice;

    fn deref(&self) -> &CanDevice {
        &self.dev
    }
}

fn device(features: u64, fifo: usize) -> (Dev, MockHandle) {
    let (host, handle) = MockHost::new(true).unwrap();
    let dev = CanDevice::new(Box::new(host), fifo).unwrap();
    dev.acked_features(features);
    let ctl = std::cell::RefCell::new(Queue::new(CONTROL_QUEUE));
    (Dev { dev, ctl }, handle)
}

/// A queue at index `index` of the device, with a context that sees it there.
struct Queue {
    q: TestQueue,
    held: HeldHeads,
    index: usize,
}

impl Queue {
    fn new(index: usize) -> Self {
        Self {
            q: TestQueue::new(64, true).unwrap(),
            held: HeldHeads::new(NUM_QUEUES),
            index,
        }
    }

    fn run<R>(&self, f: impl FnOnce(&QueueContext<'_>) -> R) -> R {
        let mut vrings: [Option<&Vring>; NUM_QUEUES] = [None; NUM_QUEUES];
        vrings[self.index] = Some(&self.q.vring);
        let ctx = QueueContext {
            vrings: &vrings,
            held: &self.held,
            ..self.q.context()
        };
        f(&ctx)
    }

    fn kick(&self, dev: &CanDevice) {
        self.run(|ctx| dev.process_queue(ctx, self.index, &self.q.vring))
            .unwrap();
    }

    fn host_event(&self, dev: &CanDevice, events: EventSet) {
        self.run(|ctx| dev.host_event(ctx, TOKEN_HOST, events, &[]))
            .unwrap();
    }

    /// Used entries since the last call, as (head, used length).
    fn used(&mut self) -> Vec<(u32, u32)> {
        self.q.take_used().unwrap()
    }
}

/// Post a request of `out` bytes with a one-byte result buffer; returns
/// (head, result address).
fn post(q: &mut Queue, slot: u64, out: &[u8]) -> (u16, u64) {
    let at = BUFFERS + slot * 0x200;
    q.q.write_bytes(at, out).unwrap();
    q.q.write_bytes(at + 0x100, &[0xFF]).unwrap();
    let head =
        q.q.add(&[
            (at, u32::try_from(out.len()).unwrap(), false),
            (at + 0x100, 1, true),
        ])
        .unwrap();
    (head, at + 0x100)
}

fn tx_bytes(flags: u32, id: u32, data: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        msg_type: MSG_TX.into(),
        length: u16::try_from(data.len()).unwrap().into(),
        flags: flags.into(),
        can_id: id.into(),
        ..FrameHeader::default()
    };
    let mut v = h.as_slice().to_vec();
    v.extend_from_slice(data);
    v
}

fn control(dev: &Dev, msg: u16) -> u8 {
    let mut c = dev.ctl.borrow_mut();
    let (head, res) = post(&mut c, 0, &msg.to_le_bytes());
    c.kick(dev);
    assert_eq!(c.used(), vec![(u32::from(head), 1)]);
    c.q.read(res, 1).unwrap()[0]
}

fn result(q: &Queue, at: u64) -> u8 {
    q.q.read(at, 1).unwrap()[0]
}

fn frame(s: &str) -> CanFrame {
    s.parse().unwrap()
}

#[test]
fn tx_while_stopped_is_not_ok_and_never_sent() {
    let (dev, host) = device(ALL, 8);
    let mut tx = Queue::new(TX_QUEUE);
    let (head, res) = post(&mut tx, 0, &tx_bytes(0, 0x123, &[1, 2]));

    tx.kick(&dev);

    assert_eq!(tx.used(), vec![(u32::from(head), 1)]);
    assert_eq!(result(&tx, res), RESULT_NOT_OK);
    assert!(host.sent().is_empty());
}

#[test]
fn started_controller_sends_and_answers_ok_at_once_without_late_ack() {
    let (dev, host) = device(EARLY, 8);
    assert_eq!(control(&dev, MSG_START), RESULT_OK);
    assert!(host.online());
    let mut tx = Queue::new(TX_QUEUE);
    let (head, res) = post(&mut tx, 0, &tx_bytes(0, 0x123, &[1, 2]));

    tx.kick(&dev);

    assert_eq!(tx.used(), vec![(u32::from(head), 1)]);
    assert_eq!(result(&tx, res), RESULT_OK);
    assert_eq!(host.sent(), vec![frame("123#0102")]);
}

#[test]
fn late_ack_holds_the_request_until_the_frame_is_echoed() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (head, res) = post(&mut tx, 0, &tx_bytes(0, 0x10, &[7]));
    tx.kick(&dev);
    assert!(tx.used().is_empty(), "answered before the echo");
    assert_eq!(host.sent().len(), 1);

    host.push(Received::Echo(frame("010#07")));
    tx.host_event(&dev, EventSet::IN);

    assert_eq!(tx.used(), vec![(u32::from(head), 1)]);
    assert_eq!(result(&tx, res), RESULT_OK);
}

#[test]
fn echoes_confirm_requests_in_transmission_order() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (a, _) = post(&mut tx, 0, &tx_bytes(0, 0x1, &[1]));
    let (b, _) = post(&mut tx, 1, &tx_bytes(0, 0x2, &[2]));
    tx.kick(&dev);

    host.push(Received::Echo(frame("001#01")));
    host.push(Received::Echo(frame("002#02")));
    tx.host_event(&dev, EventSet::IN);

    let heads: Vec<u32> = tx.used().iter().map(|u| u.0).collect();
    assert_eq!(heads, vec![u32::from(a), u32::from(b)]);
}

#[test]
fn stale_echo_of_a_cancelled_frame_confirms_nothing() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (head, _) = post(&mut tx, 0, &tx_bytes(0, 0x3, &[3]));
    tx.kick(&dev);

    host.push(Received::Echo(frame("004#04")));
    tx.host_event(&dev, EventSet::IN);

    assert!(tx.used().is_empty());
    assert_eq!(tx.q.in_flight(), 1, "head {head} must stay held");
}

#[test]
fn refused_frame_is_not_ok_and_the_next_one_is_sent() {
    let (dev, host) = device(EARLY, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (_, bad) = post(&mut tx, 0, &tx_bytes(0, 0x800, &[]));
    let (_, good) = post(&mut tx, 1, &tx_bytes(0, 0x7FF, &[]));

    tx.kick(&dev);

    assert_eq!(tx.used().len(), 2);
    assert_eq!(
        (result(&tx, bad), result(&tx, good)),
        (RESULT_NOT_OK, RESULT_OK)
    );
    assert_eq!(host.sent(), vec![frame("7FF#")]);
}

#[test]
fn fd_frame_from_a_classic_driver_is_not_ok() {
    let (dev, host) = device(1 << F_CAN_CLASSIC, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (_, res) = post(&mut tx, 0, &tx_bytes(FLAG_FD, 0x1, &[0; 12]));

    tx.kick(&dev);

    assert_eq!(result(&tx, res), RESULT_NOT_OK);
    assert!(host.sent().is_empty());
}

#[test]
fn frames_the_host_cannot_take_wait_in_order_until_it_is_writable() {
    let (dev, host) = device(EARLY, 8);
    control(&dev, MSG_START);
    host.set_blocked(true);
    let mut tx = Queue::new(TX_QUEUE);
    let (a, _) = post(&mut tx, 0, &tx_bytes(0, 0x1, &[1]));
    let (b, _) = post(&mut tx, 1, &tx_bytes(0, 0x2, &[2]));
    tx.kick(&dev);
    assert!(tx.used().is_empty());

    host.set_blocked(false);
    tx.host_event(&dev, EventSet::OUT);

    assert_eq!(host.sent(), vec![frame("001#01"), frame("002#02")]);
    let heads: Vec<u32> = tx.used().iter().map(|u| u.0).collect();
    assert_eq!(heads, vec![u32::from(a), u32::from(b)]);
}

#[test]
fn host_send_failure_is_not_ok_for_that_frame_only() {
    let (dev, host) = device(EARLY, 8);
    control(&dev, MSG_START);
    host.set_failing(Some(io::ErrorKind::OutOfMemory));
    let mut tx = Queue::new(TX_QUEUE);
    let (_, res) = post(&mut tx, 0, &tx_bytes(0, 0x1, &[1]));
    tx.kick(&dev);
    assert_eq!(result(&tx, res), RESULT_NOT_OK);

    host.set_failing(None);
    let (_, res) = post(&mut tx, 1, &tx_bytes(0, 0x1, &[1]));
    tx.kick(&dev);

    assert_eq!(result(&tx, res), RESULT_OK);
}

#[test]
fn request_without_a_result_byte_is_used_empty_and_not_sent() {
    let (dev, host) = device(EARLY, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    tx.q.write_bytes(BUFFERS, &tx_bytes(0, 1, &[])).unwrap();
    let head = tx.q.add(&[(BUFFERS, 16, false)]).unwrap();

    tx.kick(&dev);

    assert_eq!(tx.used(), vec![(u32::from(head), 0)]);
    assert!(host.sent().is_empty());
}

fn post_rx(q: &mut Queue, slot: u64, len: u32) -> (u16, u64) {
    let at = BUFFERS + slot * 0x100;
    (q.q.add(&[(at, len, true)]).unwrap(), at)
}

#[test]
fn rx_buffer_is_held_until_a_frame_arrives() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut rx = Queue::new(RX_QUEUE);
    let (head, at) = post_rx(&mut rx, 0, 24);
    rx.kick(&dev);
    assert!(rx.used().is_empty(), "an empty rx buffer was returned");

    host.push(Received::Frame(frame("1ABCDEF0#C0FFEE")));
    rx.host_event(&dev, EventSet::IN);

    assert_eq!(rx.used(), vec![(u32::from(head), 19)]);
    let bytes = rx.q.read(at, 19).unwrap();
    assert_eq!(&bytes[16..], &[0xC0, 0xFF, 0xEE]);
}

#[test]
fn frames_wait_in_the_fifo_for_buffers_and_the_oldest_is_dropped_when_full() {
    let (dev, host) = device(ALL, 2);
    control(&dev, MSG_START);
    for id in 1..=3 {
        host.push(Received::Frame(
            CanFrame::new(id, false, false, &[]).unwrap(),
        ));
    }
    let mut rx = Queue::new(RX_QUEUE);
    rx.host_event(&dev, EventSet::IN);

    let (a, at_a) = post_rx(&mut rx, 0, 24);
    let (b, at_b) = post_rx(&mut rx, 1, 24);
    let (_c, _) = post_rx(&mut rx, 2, 24);
    rx.kick(&dev);

    assert_eq!(rx.used(), vec![(u32::from(a), 16), (u32::from(b), 16)]);
    let id = |at| u32::from_le_bytes(rx.q.read(at + 12, 4).unwrap().try_into().unwrap());
    assert_eq!(
        (id(at_a), id(at_b)),
        (2, 3),
        "frame 1 should have been dropped"
    );
    assert_eq!(dev.stats().rx_overflow, 1);
}

#[test]
fn frames_received_while_stopped_are_dropped() {
    let (dev, host) = device(ALL, 8);
    let mut rx = Queue::new(RX_QUEUE);
    post_rx(&mut rx, 0, 24);
    rx.kick(&dev);

    host.push(Received::Frame(frame("123#01")));
    rx.host_event(&dev, EventSet::IN);

    assert!(rx.used().is_empty());
    assert_eq!(dev.stats().rx_while_stopped, 1);
}

#[test]
fn frames_of_types_not_negotiated_are_not_delivered() {
    let (dev, host) = device(1 << F_CAN_CLASSIC, 8);
    control(&dev, MSG_START);
    let mut rx = Queue::new(RX_QUEUE);
    post_rx(&mut rx, 0, 80);
    rx.kick(&dev);

    host.push(Received::Frame(
        CanFrame::new(1, false, true, &[0; 12]).unwrap(),
    ));
    host.push(Received::Frame(frame("002#R1")));
    rx.host_event(&dev, EventSet::IN);

    assert!(rx.used().is_empty());
    assert_eq!(dev.stats().rx_not_negotiated, 2);
}

#[test]
fn received_rtr_frame_uses_header_plus_its_length() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut rx = Queue::new(RX_QUEUE);
    let (head, at) = post_rx(&mut rx, 0, 24);
    rx.kick(&dev);

    host.push(Received::Frame(frame("123#R5")));
    rx.host_event(&dev, EventSet::IN);

    assert_eq!(rx.used(), vec![(u32::from(head), 21)]);
    let flags = u32::from_le_bytes(rx.q.read(at + 8, 4).unwrap().try_into().unwrap());
    assert_eq!(flags, FLAG_RTR);
}

#[test]
fn rx_buffer_too_small_for_a_frame_is_used_empty_and_the_frame_takes_the_next() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut rx = Queue::new(RX_QUEUE);
    let (small, _) = post_rx(&mut rx, 0, 20);
    let (big, _) = post_rx(&mut rx, 1, 80);
    rx.kick(&dev);

    host.push(Received::Frame(
        CanFrame::new(1, false, true, &[1; 48]).unwrap(),
    ));
    rx.host_event(&dev, EventSet::IN);

    assert_eq!(rx.used(), vec![(u32::from(small), 0), (u32::from(big), 64)]);
}

#[test]
fn rx_buffer_smaller_than_a_header_is_answered_at_once() {
    let (dev, _host) = device(ALL, 8);
    let mut rx = Queue::new(RX_QUEUE);
    let (head, _) = post_rx(&mut rx, 0, 15);

    rx.kick(&dev);

    assert_eq!(rx.used(), vec![(u32::from(head), 0)]);
}

#[test]
fn bus_off_sets_the_status_bit_and_a_start_clears_it() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let rx = Queue::new(RX_QUEUE);

    host.push(Received::Error(ErrorFrame::bus_off()));
    rx.host_event(&dev, EventSet::IN);

    assert_eq!(dev.config(), STATUS_BUSOFF.to_le_bytes().to_vec());
    assert!(!host.online());
    assert_eq!(dev.stats().bus_offs, 1);
    assert_eq!(control(&dev, MSG_START), RESULT_OK);
    assert_eq!(dev.config(), vec![0, 0]);
}

#[test]
fn bus_off_answers_pending_tx_not_ok() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (head, res) = post(&mut tx, 0, &tx_bytes(0, 0x10, &[7]));
    tx.kick(&dev);

    host.push(Received::Error(ErrorFrame::bus_off()));
    tx.host_event(&dev, EventSet::IN);

    assert_eq!(tx.used(), vec![(u32::from(head), 1)]);
    assert_eq!(result(&tx, res), RESULT_NOT_OK);
}

#[test]
fn other_error_frames_do_not_stop_the_controller() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let rx = Queue::new(RX_QUEUE);

    host.push(Received::Error(ErrorFrame {
        class: crate::host::ERR_CRTL,
        data: [0; 8],
    }));
    rx.host_event(&dev, EventSet::IN);

    assert_eq!(dev.config(), vec![0, 0]);
    assert!(host.online());
}

#[test]
fn start_with_the_link_down_is_not_ok() {
    let (dev, host) = device(ALL, 8);
    host.set_link_up(false);

    assert_eq!(control(&dev, MSG_START), RESULT_NOT_OK);
    assert!(!host.online());
}

#[test]
fn stop_takes_the_confirmations_already_there_before_cancelling_the_rest() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (_, confirmed) = post(&mut tx, 0, &tx_bytes(0, 0x1, &[1]));
    let (_, cancelled) = post(&mut tx, 1, &tx_bytes(0, 0x2, &[2]));
    tx.kick(&dev);
    host.push(Received::Echo(frame("001#01")));

    // STOP on a context that also sees the TX queue.
    tx.run(|ctx| {
        let mut st = dev.lock();
        let mut notify = false;
        let mut w = Work {
            ctx,
            features: dev.features(),
            status: &dev.status,
            notify: &mut notify,
        };
        assert_eq!(st.control(&mut w, Ok(Command::Stop)).unwrap(), RESULT_OK);
    });

    assert_eq!(tx.used().len(), 2);
    assert_eq!(
        (result(&tx, confirmed), result(&tx, cancelled)),
        (RESULT_OK, RESULT_NOT_OK)
    );
    assert!(!host.online());
}

#[test]
fn answers_for_a_queue_the_context_does_not_have_are_written_later() {
    let (dev, _host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    let (head, res) = post(&mut tx, 0, &tx_bytes(0, 0x10, &[7]));
    tx.kick(&dev);

    // STOP through a control queue whose context lacks the TX vring.
    assert_eq!(control(&dev, MSG_STOP), RESULT_OK);
    assert!(tx.used().is_empty());
    tx.kick(&dev);

    assert_eq!(tx.used(), vec![(u32::from(head), 1)]);
    assert_eq!(result(&tx, res), RESULT_NOT_OK);
}

#[test]
fn unknown_control_message_is_not_ok() {
    let (dev, _host) = device(ALL, 8);
    assert_eq!(control(&dev, 0x0203), RESULT_NOT_OK);
}

#[test]
fn saved_state_keeps_the_mode_and_answers_frames_in_flight_not_ok() {
    let (dev, _host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut tx = Queue::new(TX_QUEUE);
    post(&mut tx, 0, &tx_bytes(0, 0x10, &[7]));
    tx.kick(&dev);

    let saved = dev.save_state().unwrap();

    assert_eq!(saved.mode, Mode::Started);
    assert_eq!(saved.tx.len(), 1);
    assert_eq!(saved.tx[0].1, RESULT_NOT_OK);
    assert_eq!(saved.stats.tx_lost_in_migration, 1);
    let (dest, dest_host) = device(ALL, 8);
    dest.load_state(saved).unwrap();
    assert!(dest_host.online(), "a started controller joins the bus");
}

#[test]
fn ring_set_up_anew_drops_the_old_drivers_buffers_before_writing_anything() {
    let (dev, host) = device(ALL, 8);
    control(&dev, MSG_START);
    let mut old = Queue::new(RX_QUEUE);
    let (_, old_at) = post_rx(&mut old, 0, 24);
    old.q.fill(old_at, 24, 0xAA).unwrap();
    old.kick(&dev);
    // A new driver: the same descriptor table address, back at index 0.
    let mut new = Queue::new(RX_QUEUE);
    let (head, at) = post_rx(&mut new, 1, 24);

    new.kick(&dev);
    host.push(Received::Frame(frame("123#01")));
    new.host_event(&dev, EventSet::IN);

    assert!(new.used().is_empty(), "delivered to a stopped controller");
    assert_eq!(old.q.read(old_at, 24).unwrap(), vec![0xAA; 24]);
    assert!(!host.online());
    assert_eq!(control(&dev, MSG_START), RESULT_OK);
    host.push(Received::Frame(frame("123#02")));
    new.host_event(&dev, EventSet::IN);
    assert_eq!(new.used(), vec![(u32::from(head), 17)]);
    assert_eq!(new.q.read(at + 16, 1).unwrap(), vec![2]);
}
