// emu_table.h: the table of kernels the emulated device launches by name. The Go side
// generates emu_kernels.cc, which includes cuda_emu.h, kernels.cu and this header, and lists
// every kernel of kernels.cu with EMU_KERNEL(name).
#pragma once

#include <cstddef>
#include <type_traits>
#include <utility>

// EmuKernel is a kernel and the trampoline that calls it with arguments unpacked from
// 8-byte slots.
struct EmuKernel {
  const char* name;
  void (*call)(void** args);
};

namespace emu {

template <typename F, F f>
struct Trampoline;

// The trampoline of f(P...): argument i is read from the slot args[i] points at, as P_i
// (the value sits in the slot's low bytes, little-endian, as the GPU's launch marshals it).
template <typename... P, void (*f)(P...)>
struct Trampoline<void (*)(P...), f> {
  static void call(void** args) { invoke(args, std::index_sequence_for<P...>{}); }

 private:
  template <std::size_t... I>
  static void invoke(void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<P>*>(args[I])...);
  }
};

}  // namespace emu

#define EMU_KERNEL(name) EmuKernel{#name, &::emu::Trampoline<decltype(&name), &name>::call}
