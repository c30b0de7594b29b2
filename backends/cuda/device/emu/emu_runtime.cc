// emu_runtime.cc: the runtime of the emulated CUDA device (cuda_emu.h describes the model).
// It is compiled with the generated kernel table (emu_kernels.cc, which includes kernels.cu)
// into one shared library that the Go side (device/emulated.go) loads and calls through
// the C API at the end of this file.
#include "cuda_emu.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "emu_table.h"

// The kernel table, generated with the kernels (emu_kernels.cc).
extern "C" const EmuKernel emu_kernel_table[];
extern "C" const int emu_kernel_table_len;

namespace emu {
namespace {

constexpr size_t kStackBytes = 256 << 10;  // per CUDA thread; a guard page below it
constexpr unsigned kMaxThreads = 1024;

enum class State { kRunnable, kAtBarrier, kAtWarp, kDone };

// Schedule orders of the threads of a block between barriers.
enum Schedule : int { kForward = 0, kReverse = 1, kRandom = 2 };

// Fiber is one CUDA thread of the block a worker runs; fibers are reused block after block.
struct Fiber {
  ucontext_t start;  // the entry context, made once
  jmp_buf ctx;       // where the fiber stopped
  bool started = false;
  char* stack = nullptr;
  ThreadCoords coords;
  int linear = 0;
  State state = State::kRunnable;
  int site = 0;  // source line of the barrier or warp op it waits at
  // a pending warp collective
  WarpOp op = kShfl;
  unsigned mask = 0;
  uint64_t bits = 0, result = 0;
  int arg = 0, width = 32;
};

// Launch is one kernel launch, shared by the workers running its blocks.
struct Launch {
  const EmuKernel* kernel = nullptr;
  void** args = nullptr;
  dim3 grid, block;
  size_t dynShared = 0;
  unsigned long long blocks = 0;
  std::atomic<unsigned long long> next{0};
  std::atomic<int> running{0};
  Schedule schedule = kForward;
  uint64_t seed = 0;
  std::mutex mu;
  std::string error;  // the first failure
  std::atomic<bool> failedFlag{false};

  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> l(mu);
    if (error.empty()) error = msg;
    failedFlag.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failedFlag.load(std::memory_order_relaxed); }
};

// Worker is one OS thread running blocks, with its fibers.
struct Worker {
  jmp_buf sched;
  std::vector<Fiber*> fibers;
  Launch* launch = nullptr;
  std::vector<char> dynShared;
  std::vector<char> altStack;
  std::vector<int> order;  // the round's thread order
};

thread_local Worker* tlsWorker = nullptr;
thread_local Fiber* tlsFiber = nullptr;

[[noreturn]] void fiberMain();

Fiber* newFiber() {
  auto* f = new Fiber();
  long page = sysconf(_SC_PAGESIZE);
  void* mem = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("mypt cuda emulator: fiber stack");
    std::abort();
  }
  mprotect(mem, page, PROT_NONE);  // overflowing the stack faults instead of corrupting memory
  f->stack = static_cast<char*>(mem) + page;
  getcontext(&f->start);
  f->start.uc_stack.ss_sp = f->stack;
  f->start.uc_stack.ss_size = kStackBytes;
  f->start.uc_link = nullptr;
  makecontext(&f->start, fiberMain, 0);
  return f;
}

std::string coordsOf(const ThreadCoords& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u,%u,%u), thread (%u,%u,%u)", c.block.x, c.block.y, c.block.z, c.thread.x,
                c.thread.y, c.thread.z);
  return buf;
}

// yield returns from the running fiber to its worker's scheduler.
void yield(Fiber* f) {
  if (!_setjmp(f->ctx)) _longjmp(tlsWorker->sched, 1);
}

// resume runs f until it blocks or finishes.
void resume(Worker* w, Fiber* f) {
  tlsFiber = f;
  if (!_setjmp(w->sched)) {
    if (!f->started) {
      f->started = true;
      setcontext(&f->start);
    }
    _longjmp(f->ctx, 1);
  }
  tlsFiber = nullptr;
}

[[noreturn]] void fiberMain() {
  for (;;) {
    Fiber* f = tlsFiber;
    Launch* l = tlsWorker->launch;
    l->kernel->call(l->args);
    f->state = State::kDone;
    yield(f);
  }
}

// order fills o with the sequence in which a round runs the block's n threads.
void order(std::vector<int>& o, int n, const Launch& l, uint64_t blockLinear, int round) {
  o.resize(n);
  for (int i = 0; i < n; i++) o[i] = l.schedule == kReverse ? n - 1 - i : i;
  if (l.schedule == kRandom) {
    std::mt19937_64 rng(l.seed ^ (blockLinear * 0x9E3779B97F4A7C15ULL) ^ (uint64_t(round) << 32));
    std::shuffle(o.begin(), o.end(), rng);
  }
}

// warpResult computes lane's result of the collective the lanes of group (a bit mask of
// the warp's lanes, all waiting at the same op) perform.
uint64_t warpResult(Fiber** lanes, unsigned group, int lane) {
  Fiber* f = lanes[lane];
  int width = f->width, base = lane & ~(width - 1);
  auto from = [&](int src) -> uint64_t {
    if (src < 0 || src >= 32 || !(group >> src & 1)) return f->bits;  // not a participant: own value
    return lanes[src]->bits;
  };
  switch (f->op) {
    case kShfl:
      return from(base + (((f->arg % width) + width) % width));
    case kShflUp:
      return lane - f->arg < base ? f->bits : from(lane - f->arg);
    case kShflDown:
      return lane + f->arg >= base + width ? f->bits : from(lane + f->arg);
    case kShflXor: {
      int src = lane ^ f->arg;
      return src >= base + width ? f->bits : from(src);
    }
    case kBallot:
    case kAny:
    case kAll: {
      unsigned ballot = 0;
      for (int i = 0; i < 32; i++) {
        if ((group >> i & 1) && lanes[i]->bits) ballot |= 1u << i;
      }
      if (f->op == kBallot) return ballot;
      if (f->op == kAny) return ballot != 0;
      return ballot == group;
    }
    case kSyncWarp:
      return 0;
    case kActiveMask:
      return group;
  }
  return 0;
}

// sameCollective reports whether g waits at the collective f waits at: the same operation
// with the same mask, or for __activemask the same call site (the lanes that run it
// converged).
bool sameCollective(const Fiber* f, const Fiber* g) {
  return g->state == State::kAtWarp && g->op == f->op &&
         (f->op == kActiveMask ? g->site == f->site : g->mask == f->mask);
}

// resolveWarps completes every warp collective whose participants have all arrived: the
// live lanes its mask names (__activemask: the lanes at its call site, whatever the others
// do). A lane of the mask that waits elsewhere, at a barrier or at another collective, may
// still arrive (it skipped a collective the others wait at, say), so the collective waits;
// when nothing in the block can move, runBlock reports it (stuckWarp). It returns whether
// one completed; a malformed collective fails the launch.
bool resolveWarps(Worker* w, int n) {
  Launch* l = w->launch;
  bool progress = false;
  for (int base = 0; base < n; base += 32) {
    Fiber* lanes[32] = {};
    for (int i = 0; i < 32 && base + i < n; i++) lanes[i] = w->fibers[base + i];
    unsigned seen = 0;  // lanes whose collective this pass has looked at
    for (int first = 0; first < 32; first++) {
      Fiber* f = lanes[first];
      if (!f || f->state != State::kAtWarp || (seen >> first & 1)) continue;
      if (f->op != kActiveMask && !(f->mask >> first & 1)) {
        char buf[320];
        std::snprintf(buf, sizeof buf, "kernel %s: %s: the warp collective on line %d has mask %#x, without the calling lane %d",
                      l->kernel->name, coordsOf(f->coords).c_str(), f->site, f->mask, first);
        l->fail(buf);
        return false;
      }
      unsigned group = 0;
      bool complete = true;
      for (int i = 0; i < 32; i++) {
        Fiber* g = lanes[i];
        if (!g || g->state == State::kDone) continue;  // exited lanes do not take part
        if (f->op != kActiveMask && !(f->mask >> i & 1)) continue;
        if (sameCollective(f, g)) {
          group |= 1u << i;
        } else if (f->op != kActiveMask) {
          complete = false;  // yet to arrive
        }
      }
      seen |= group;
      if (!complete) continue;
      if (f->width < 1 || f->width > 32 || (f->width & (f->width - 1))) {
        l->fail(std::string("kernel ") + l->kernel->name + ": " + coordsOf(f->coords) + ": shuffle width " +
                std::to_string(f->width) + " is not a power of two ≤ 32");
        return false;
      }
      for (int i = 0; i < 32; i++) {
        if (group >> i & 1) lanes[i]->result = warpResult(lanes, group, i);
      }
      for (int i = 0; i < 32; i++) {
        if (group >> i & 1) lanes[i]->state = State::kRunnable;
      }
      progress = true;
    }
  }
  return progress;
}

// stuckWarp describes a warp collective that cannot complete (nothing in the block can
// move): the first waiting lane, and a lane of its mask that waits elsewhere.
std::string stuckWarp(Worker* w, int n) {
  for (int i = 0; i < n; i++) {
    Fiber* f = w->fibers[i];
    if (f->state != State::kAtWarp) continue;
    int base = i & ~31;
    for (int j = 0; j < 32 && base + j < n; j++) {
      Fiber* g = w->fibers[base + j];
      if (!(f->mask >> j & 1) || g->state == State::kDone || sameCollective(f, g)) continue;
      char buf[400];
      std::snprintf(buf, sizeof buf,
                    "kernel %s: %s waits at a warp collective (line %d) that lane %d of its warp never reaches (it "
                    "waits at %s on line %d)",
                    w->launch->kernel->name, coordsOf(f->coords).c_str(), f->site, j,
                    g->state == State::kAtBarrier ? "__syncthreads()" : "another warp collective", g->site);
      return buf;
    }
  }
  return std::string("kernel ") + w->launch->kernel->name + ": a block deadlocked";
}

// runBlock runs one block to completion (or until the launch fails).
void runBlock(Worker* w, uint64_t linearBlock) {
  Launch* l = w->launch;
  const dim3 g = l->grid, b = l->block;
  dim3 bid;
  bid.x = linearBlock % g.x;
  bid.y = (linearBlock / g.x) % g.y;
  bid.z = linearBlock / (uint64_t(g.x) * g.y);
  int n = int(b.x * b.y * b.z);
  while (int(w->fibers.size()) < n) w->fibers.push_back(newFiber());
  for (int i = 0; i < n; i++) {
    Fiber* f = w->fibers[i];
    f->linear = i;
    f->coords.thread = dim3{unsigned(i % b.x), unsigned((i / b.x) % b.y), unsigned(i / (b.x * b.y))};
    f->coords.block = bid;
    f->coords.blockShape = b;
    f->coords.gridShape = g;
    f->state = State::kRunnable;
  }
  if (l->dynShared) {
    w->dynShared.assign(l->dynShared, 0xff);  // uninitialised on a GPU: poisoned (NaN floats)
  }
  for (int round = 0;; round++) {
    order(w->order, n, *l, linearBlock, round);
    for (int i : w->order) {
      Fiber* f = w->fibers[i];
      if (f->state == State::kRunnable) resume(w, f);
      if (l->failed()) break;
    }
    if (l->failed()) {
      for (int i = 0; i < n; i++) w->fibers[i]->started = false;  // abandoned mid-kernel: restart fresh
      return;
    }
    int done = 0, atBarrier = 0;
    for (int i = 0; i < n; i++) {
      State s = w->fibers[i]->state;
      done += s == State::kDone;
      atBarrier += s == State::kAtBarrier;
    }
    if (done == n) return;
    if (resolveWarps(w, n)) continue;
    if (l->failed()) {
      for (int i = 0; i < n; i++) w->fibers[i]->started = false;
      return;
    }
    if (atBarrier == n - done) {
      // every live thread waits at a barrier: the same one, or the code diverged
      int site = -1;
      for (int i = 0; i < n; i++) {
        Fiber* f = w->fibers[i];
        if (f->state != State::kAtBarrier) continue;
        if (site >= 0 && f->site != site) {
          l->fail(std::string("kernel ") + l->kernel->name + ": block (" + std::to_string(bid.x) + "," +
                  std::to_string(bid.y) + "," + std::to_string(bid.z) + "): threads wait at __syncthreads() on line " +
                  std::to_string(site) + " and on line " + std::to_string(f->site) + " (divergent barrier)");
          for (int j = 0; j < n; j++) w->fibers[j]->started = false;
          return;
        }
        site = f->site;
      }
      for (int i = 0; i < n; i++) {
        if (w->fibers[i]->state == State::kAtBarrier) w->fibers[i]->state = State::kRunnable;
      }
      continue;
    }
    l->fail(stuckWarp(w, n));
    for (int i = 0; i < n; i++) w->fibers[i]->started = false;
    return;
  }
}

// Pool is the OS threads that run blocks; launches are serialised (every device of a
// process that loaded this library shares the pool).
class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; i++) threads_.emplace_back([this] { loop(); });
  }

  void run(Launch* l) {
    std::lock_guard<std::mutex> one(runMu_);
    {
      std::unique_lock<std::mutex> g(mu_);
      launch_ = l;
      generation_++;
      active_ = int(threads_.size());
    }
    cv_.notify_all();
    std::unique_lock<std::mutex> g(mu_);
    done_.wait(g, [this] { return active_ == 0; });
    launch_ = nullptr;
  }

  int size() const { return int(threads_.size()); }

 private:
  void loop() {
    Worker w;
    tlsWorker = &w;
    w.altStack.resize(64 << 10);
    stack_t ss{};
    ss.ss_sp = w.altStack.data();
    ss.ss_size = w.altStack.size();
    sigaltstack(&ss, nullptr);  // so a fault on a fiber stack (overflow) can still be reported
    unsigned long long seen = 0;
    for (;;) {
      Launch* l;
      {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [&] { return generation_ != seen; });
        seen = generation_;
        l = launch_;
      }
      w.launch = l;
      for (;;) {
        unsigned long long b = l->next.fetch_add(1);
        if (b >= l->blocks || l->failed()) break;
        runBlock(&w, b);
      }
      w.launch = nullptr;
      std::lock_guard<std::mutex> g(mu_);
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex runMu_;  // held by the launch in progress
  std::mutex mu_;
  std::condition_variable cv_, done_;
  Launch* launch_ = nullptr;
  unsigned long long generation_ = 0;
  int active_ = 0;
};

Pool* pool = nullptr;
struct sigaction previousSegv, previousBus;

// onFault reports a memory fault inside a kernel (an address outside every device
// allocation, a guard page, a fiber stack overflow) with the kernel and the thread, and
// ends the process; a fault elsewhere goes to the handler that was there before.
void onFault(int sig, siginfo_t* info, void* uctx) {
  Fiber* f = tlsFiber;
  Worker* w = tlsWorker;
  if (f && w && w->launch) {
    char buf[512];
    int n = std::snprintf(buf, sizeof buf,
                          "mypt cuda emulator: kernel %s, %s: invalid memory access at %p (outside every device "
                          "allocation, in a guard page, or a stack overflow)\n",
                          w->launch->kernel->name, coordsOf(f->coords).c_str(), info->si_addr);
    if (n > 0) (void)!write(2, buf, size_t(std::min<int>(n, int(sizeof buf) - 1)));
    _exit(86);
  }
  struct sigaction& prev = sig == SIGBUS ? previousBus : previousSegv;
  if (prev.sa_flags & SA_SIGINFO) {
    prev.sa_sigaction(sig, info, uctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
  } else {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

}  // namespace

const ThreadCoords& current() { return tlsFiber->coords; }

void syncthreads(int site) {
  Fiber* f = tlsFiber;
  f->state = State::kAtBarrier;
  f->site = site;
  yield(f);
}

uint64_t warp(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, int site) {
  Fiber* f = tlsFiber;
  f->state = State::kAtWarp;
  f->op = op;
  f->mask = mask;
  f->bits = bits;
  f->arg = arg;
  f->width = width;
  f->site = site;
  yield(f);
  return f->result;
}

void* dynamicShared() { return tlsWorker->dynShared.data(); }

}  // namespace emu

// ---- the C API the Go device calls

extern "C" {

// emu_init starts the pool of threads OS threads (0: one per core) and installs the fault
// reporter, once per process (every device of a process shares the library). It returns
// the pool's size.
int emu_init(int threads) {
  static std::mutex mu;
  std::lock_guard<std::mutex> l(mu);
  if (emu::pool) return emu::pool->size();
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  struct sigaction sa {};
  sa.sa_sigaction = emu::onFault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &emu::previousSegv);
  sigaction(SIGBUS, &sa, &emu::previousBus);
  emu::pool = new emu::Pool(threads);
  return emu::pool->size();
}

int emu_kernel_count() { return emu_kernel_table_len; }

const char* emu_kernel_name(int i) { return i >= 0 && i < emu_kernel_table_len ? emu_kernel_table[i].name : nullptr; }

// emu_launch runs kernel name over grid×block threads with dynShared bytes of dynamic
// shared memory; args[i] points at the 8-byte slot of argument i (little-endian, the
// value in its low bytes). schedule orders a block's threads between barriers (0 forward,
// 1 reverse, 2 random from seed): the launching device's, since devices share the library.
// It returns 0, or 1 with the reason in err.
int emu_launch(const char* name, const unsigned* grid, const unsigned* block, unsigned long long dynShared, void** args,
               int schedule, unsigned long long seed, char* err, int errLen) {
  auto fail = [&](const std::string& msg) {
    std::snprintf(err, size_t(errLen), "%s", msg.c_str());
    return 1;
  };
  if (!emu::pool) return fail("emu_init was not called");
  const EmuKernel* k = nullptr;
  for (int i = 0; i < emu_kernel_table_len; i++) {
    if (std::strcmp(emu_kernel_table[i].name, name) == 0) k = &emu_kernel_table[i];
  }
  if (!k) return fail(std::string("unknown kernel ") + name);
  unsigned long long threads = 1ULL * block[0] * block[1] * block[2];
  if (threads == 0 || threads > emu::kMaxThreads) {
    return fail(std::string("kernel ") + name + ": " + std::to_string(threads) + " threads per block (at most 1024)");
  }
  emu::Launch l;
  l.kernel = k;
  l.args = args;
  l.grid = dim3{grid[0], grid[1], grid[2]};
  l.block = dim3{block[0], block[1], block[2]};
  l.dynShared = dynShared;
  l.blocks = 1ULL * grid[0] * grid[1] * grid[2];
  if (schedule < emu::kForward || schedule > emu::kRandom) return fail("unknown schedule " + std::to_string(schedule));
  l.schedule = emu::Schedule(schedule);
  l.seed = seed;
  emu::pool->run(&l);
  if (!l.error.empty()) return fail(l.error);
  return 0;
}

}  // extern "C"
