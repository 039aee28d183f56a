# Shared by the scripts: the build cache outside the clone and a fast linker.
# Sourced, not run.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshql/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if ! command -v mold >/dev/null 2>&1; then
  echo "== installing mold (fast linker)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mold >/dev/null || true
fi
# `mold -run` swaps the linker without touching RUSTFLAGS, so it does not invalidate the cache.
LINK=""
if command -v mold >/dev/null 2>&1; then LINK="mold -run"; fi
export LINK
