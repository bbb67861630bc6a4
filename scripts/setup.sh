# Sourced by ./tiangong. Every step checks before it acts, so running it again costs a few milliseconds.
CLI="$ROOT/artifacts/bin/TianGong.Cli/release/TianGong.Cli"
STAMP="$ROOT/artifacts/.build-stamp"

log() { printf '\033[2m[setup] %s\033[0m\n' "$*" >&2; }

libstdcxx_ok() {
  local lib
  for lib in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6 /usr/lib/libstdc++.so.6 /usr/lib/aarch64-linux-gnu/libstdc++.so.6; do
    [[ -e "$lib" ]] && grep -aq GLIBCXX_3.4.32 "$lib" && return 0
  done
  return 1
}

# libtorch 2.10 needs GLIBCXX_3.4.32. Debian 12 ships 3.4.30: take libstdc++6 alone from Debian 13,
# with the trixie suite pinned low so that nothing else is upgraded by accident.
ensure_glibcxx() {
  libstdcxx_ok && return 0
  . /etc/os-release 2>/dev/null || true
  if [[ "${ID:-}" == debian && "${VERSION_ID:-}" == 12 ]]; then
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    log "libtorch needs GLIBCXX_3.4.32; installing libstdc++6 from Debian 13 (trixie, pinned at priority 100)"
    $sudo tee /etc/apt/sources.list.d/tiangong-trixie.sources >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $sudo tee /etc/apt/preferences.d/tiangong-trixie >/dev/null <<PIN
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -t trixie libstdc++6 >/dev/null
    libstdcxx_ok || { echo "error: libstdc++6 from trixie did not provide GLIBCXX_3.4.32" >&2; exit 1; }
  else
    echo "error: libtorch 2.10 needs libstdc++ with GLIBCXX_3.4.32 (GCC 14 or newer)." >&2
    echo "       Ubuntu 24.04+ and Debian 13+ have it; on ${PRETTY_NAME:-this system}, install a newer libstdc++6." >&2
    exit 1
  fi
}

# Tokenizer normalizers (NFC/NFKC...) use .NET's ICU globalization, so TianGong no longer builds with InvariantGlobalization.
# The .NET SDK needs ICU anyway; a minimal Debian image may still lack it.
icu_ok() {
  ldconfig -p 2>/dev/null | grep -q 'libicuuc\.so' && return 0
  compgen -G '/usr/lib/*/libicuuc.so.*' >/dev/null || compgen -G '/usr/lib64/libicuuc.so.*' >/dev/null
}

ensure_icu() {
  icu_ok && return 0
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    log "installing ICU (libicu) for Unicode normalization"
    $sudo apt-get update -qq
    local pkg; pkg=$(apt-cache search --names-only '^libicu[0-9]+$' | awk '{print $1}' | sort -V | tail -1)
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkg:-libicu72}" >/dev/null
  fi
  icu_ok || { echo "error: TianGong needs ICU (libicu) for Unicode normalization; install your distribution's libicu package" >&2; exit 1; }
}

# Parallel jobs (tiangong launch) run under Open MPI's mpirun; TianGong binds libmpi.so.40 itself.
mpi_ok() {
  command -v mpirun >/dev/null && { ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40' || compgen -G '/usr/lib/*/libmpi.so.40' >/dev/null; }
}

ensure_mpi() {
  mpi_ok && return 0
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    log "installing Open MPI (openmpi-bin, libopenmpi-dev) for parallel training"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null
  fi
  mpi_ok || { echo "error: parallel training needs Open MPI (mpirun and libmpi.so.40); install your distribution's openmpi package" >&2; exit 1; }
}

# Build once; rebuild only when a source, project or config file is newer than the last build.
ensure_built() {
  if [[ -x "$CLI" && -f "$STAMP" ]] && [[ -z "$(find "$ROOT/src" "$ROOT/configs" "$ROOT/Directory.Build.props" "$ROOT/Directory.Packages.props" "$ROOT/global.json" -newer "$STAMP" \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.json' \) -print -quit 2>/dev/null)" ]]; then
    return 0
  fi
  log "building (the first build also downloads libtorch, about 600 MB)"
  dotnet build "$ROOT/src/TianGong.Cli/TianGong.Cli.csproj" -c Release -nologo -v q -clp:ErrorsOnly >&2
  touch "$STAMP"
}

# Fashion-MNIST is Debian's dataset-fashion-mnist (gzipped IDX files under /usr/share/datasets/fashion-mnist, ~30 MB).
# Not run at startup: the CLI calls it (through TIANGONG_SETUP) the first time a command needs the data.
ensure_fashion_mnist() {
  local dir=/usr/share/datasets/fashion-mnist f missing=0
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -f "$dir/$f.gz" ]] || missing=1
  done
  [[ $missing -eq 0 ]] && return 0
  command -v apt-get >/dev/null || { echo "error: Fashion-MNIST needs Debian's dataset-fashion-mnist package (no apt-get here)" >&2; return 1; }
  local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  log "installing Debian's dataset-fashion-mnist (Fashion-MNIST)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=120 install -y -qq dataset-fashion-mnist >/dev/null
}
