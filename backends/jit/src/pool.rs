//! The worker threads of an executable: a fork-join pool whose workers spin between the
//! steps of a run (a step's tiles start within a microsecond, where a sleeping worker
//! takes tens to wake), and park between runs.
//!
//! [`Pool::run`] hands `tasks` indices to the calling thread and every worker through one
//! atomic counter and returns when all are done.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job: tasks `[0, count)` of a borrowed closure.
#[derive(Copy, Clone)]
struct Job {
    /// `&(dyn Fn(usize) + Sync)`, lifetime erased; valid until `Pool::run` returns.
    body: *const (dyn Fn(usize) + Sync),
    count: usize,
}

// SAFETY: the closure is Sync and outlives every use (run waits for all workers).
unsafe impl Send for Job {}

struct Shared {
    job: Mutex<Option<Job>>,
    /// Bumped for each job; workers start when it changes.
    generation: AtomicU64,
    /// The next task index of the current job.
    next: AtomicUsize,
    /// Workers done with the current job.
    finished: AtomicUsize,
    /// While true, idle workers spin; otherwise they park on `wake`.
    hot: AtomicBool,
    wake: Condvar,
    sleep: Mutex<()>,
    stop: AtomicBool,
}

/// How long idle workers spin before parking, once a run has ended.
const SPIN: Duration = Duration::from_micros(200);

/// A pool of `threads - 1` workers (the caller is the last).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serialises runs: one job at a time.
    running: Mutex<()>,
}

impl Pool {
    /// A pool for `threads` threads in all.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            hot: AtomicBool::new(false),
            wake: Condvar::new(),
            sleep: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("dnnc-jit-{i}"))
                    .spawn(move || worker(&s))
                    .expect("a worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Keeps the workers spinning while `body` runs (a whole run of steps), then lets them
    /// park.
    pub fn hot<R>(&self, body: impl FnOnce() -> R) -> R {
        self.shared.hot.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        let r = body();
        self.shared.hot.store(false, Ordering::SeqCst);
        r
    }

    /// Runs `body(i)` for every `i` in `[0, tasks)` on all threads; returns when all have
    /// run.
    pub fn run(&self, tasks: usize, body: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 {
            (0..tasks).for_each(body);
            return;
        }
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.shared;
        // SAFETY: the lifetime is erased only until this function returns, and it returns
        // after every worker has finished with the job.
        let body: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(body) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job { body, count: tasks });
        s.next.store(0, Ordering::SeqCst);
        s.finished.store(0, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if !s.hot.load(Ordering::SeqCst) {
            let _g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // SAFETY: valid until we return.
        work(unsafe { &*body }, tasks, &s.next);
        while s.finished.load(Ordering::Acquire) < self.workers.len() {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Takes tasks until none are left.
fn work(body: &(dyn Fn(usize) + Sync), count: usize, next: &AtomicUsize) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            return;
        }
        body(i);
    }
}

fn worker(s: &Shared) {
    // Generation 0 is "no job yet", whenever this thread gets to run: a job posted before
    // it started must still be taken.
    let mut seen = 0;
    let mut idle_since = Instant::now();
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        let generation = s.generation.load(Ordering::Acquire);
        if generation != seen {
            seen = generation;
            let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(job) = job {
                // SAFETY: the job is valid until `finished` counts this worker.
                work(unsafe { &*job.body }, job.count, &s.next);
            }
            s.finished.fetch_add(1, Ordering::Release);
            idle_since = Instant::now();
            continue;
        }
        if s.hot.load(Ordering::Relaxed) || idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let g = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation.load(Ordering::SeqCst) == seen
            && !s.hot.load(Ordering::SeqCst)
            && !s.stop.load(Ordering::SeqCst)
        {
            let _g = s
                .wake
                .wait_timeout(g, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
        }
        idle_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_from_the_first_job_on() {
        for threads in [2, 3] {
            // A job posted at once, before the workers have started, must still finish.
            let pool = Pool::new(threads);
            for round in 0..400 {
                let tasks = 1 + round % 17;
                let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                let body = |i: usize| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                };
                if round % 2 == 0 {
                    pool.run(tasks, &body);
                } else {
                    pool.hot(|| pool.run(tasks, &body));
                }
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }
}
