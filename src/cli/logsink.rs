//! Where `gavel serve`'s log lines go: stderr, written in batches by one
//! background thread instead of one `write(2)` per line on the request
//! path.
//!
//! A line is appended to a shared buffer under a short lock. The writer
//! thread wakes when the buffer stops being empty, waits [`BATCH`] so
//! that the lines of busy moments travel together, and writes the lot.
//! Nothing is dropped: when the buffer holds more than [`BACKLOG`]
//! bytes (stderr is slower than the requests), the line's own writer
//! writes the buffer out itself, which slows logging callers down instead
//! of growing memory. Dropping the [`Flusher`] writes whatever is left and
//! waits for it, so a graceful shutdown loses nothing; a `kill -9` can
//! lose the last [`BATCH`] of lines, never an audit entry (those are in
//! the database before any answer).

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread gathers lines before one write.
pub const BATCH: Duration = Duration::from_millis(10);
/// Buffered bytes above which a line's writer flushes the buffer itself.
pub const BACKLOG: usize = 1 << 20;

type Out = Box<dyn Write + Send>;

struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

pub struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
    /// The destination; its lock also keeps batches in order.
    out: Mutex<Out>,
}

/// Hands out writers for the log subscriber (`MakeWriter`); cheap to clone.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

/// Owns the writer thread; dropping it writes what is left and stops it.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn start(out: Out) -> io::Result<(LogSink, Flusher)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            bytes: Vec::new(),
            closed: false,
        }),
        ready: Condvar::new(),
        out: Mutex::new(out),
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("gavel-log".into())
        .spawn(move || write_batches(&worker))?;
    Ok((
        LogSink(shared.clone()),
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain bytes behind:
    // nothing to repair, so logging goes on.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_batches(shared: &Shared) {
    loop {
        let closed = {
            let mut p = lock(&shared.pending);
            while p.bytes.is_empty() && !p.closed {
                p = shared.ready.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.closed
        };
        if !closed {
            std::thread::sleep(BATCH);
        }
        write_pending(shared);
        if closed && lock(&shared.pending).bytes.is_empty() {
            return;
        }
    }
}

/// Writes out whatever is buffered. Locks are always taken output first,
/// then the buffer, so batches reach the output in the order they filled.
fn write_pending(shared: &Shared) {
    let mut out = lock(&shared.out);
    let batch = std::mem::take(&mut lock(&shared.pending).bytes);
    if !batch.is_empty() {
        // Nowhere left to report a failing stderr to.
        let _ = out.write_all(&batch);
        let _ = out.flush();
    }
}

impl io::Write for &Shared {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut p = lock(&self.pending);
        let was_empty = p.bytes.is_empty();
        p.bytes.extend_from_slice(line);
        if p.closed || p.bytes.len() > BACKLOG {
            // No writer thread any more, or it is behind: write it now.
            drop(p);
            write_pending(self);
        } else if was_empty {
            drop(p);
            self.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = &'a Shared;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A destination the test can read, counting the writes it gets.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Seen {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(b);
            s.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_per_writer_by_the_time_the_flusher_is_dropped() {
        let seen = Seen::default();
        let (sink, flusher) = start(Box::new(seen.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        sink.make_writer()
                            .write_all(format!("writer {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flusher);
        let (bytes, writes) = seen.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("writer {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5_000).collect::<Vec<_>>(), "writer {t}");
        }
        // Batched: far fewer writes than lines.
        assert!(writes < 20_000 / 10, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_backlog_is_written_by_the_caller_and_lines_after_close_go_straight_out() {
        let seen = Seen::default();
        let (sink, flusher) = start(Box::new(seen.clone())).unwrap();
        let big = vec![b'x'; BACKLOG + 1];
        sink.make_writer().write_all(&big).unwrap();
        // Written before write_all returned, without the writer thread.
        assert_eq!(seen.0.lock().unwrap().0.len(), BACKLOG + 1);
        drop(flusher);
        sink.make_writer().write_all(b"after\n").unwrap();
        assert!(seen.0.lock().unwrap().0.ends_with(b"xafter\n"));
    }
}
