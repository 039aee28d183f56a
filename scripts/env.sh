# Shared by the scripts: the build cache outside the clone and a fast linker.
# Sourced, not run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshql/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Build needs: mold (a fast linker, optional) and OpenSSL headers (the PostgreSQL
# driver's TLS is native-tls).
BUILD_APT=()
command -v mold >/dev/null 2>&1 || BUILD_APT+=(mold)
pkg-config --exists openssl 2>/dev/null || BUILD_APT+=(libssl-dev pkg-config)
if [ ${#BUILD_APT[@]} -gt 0 ]; then
  echo "== apt-get install ${BUILD_APT[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${BUILD_APT[@]}" >/dev/null || true
fi
# .cargo/config.toml builds x86_64 code for x86-64-v3 (AVX2); on a CPU without AVX2 such
# a binary dies of an illegal instruction before main, so build for the baseline there.
if [ "$(uname -m)" = x86_64 ] && [ -z "${RUSTFLAGS:-}" ] && ! grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  echo "== this CPU has no AVX2: building for baseline x86-64 (RUSTFLAGS=\"-C target-cpu=x86-64\")"
  export RUSTFLAGS="-C target-cpu=x86-64"
fi
# `mold -run` swaps the linker without touching RUSTFLAGS, so it does not invalidate the cache.
LINK=""
if command -v mold >/dev/null 2>&1; then LINK="mold -run"; fi
export LINK
