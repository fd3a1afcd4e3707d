# The project's Python environment, shared by scripts/sdk-tests and scripts/api-fuzz: a
# virtualenv in .venv holding the exact pins of tests/sdk/requirements.txt (the vendor's SDK)
# and tests/openapi/requirements.txt (the OpenAPI validator and fuzzer). It is rebuilt when
# either file changes: a hash of both is stamped inside it. Source this file from the
# repository's root, then call `python_env`; it sets VENV_PYTHON.

python_requirements=(tests/sdk/requirements.txt tests/openapi/requirements.txt)
venv=.venv
venv_stamp="$venv/.requirements.sha256"

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
  elif command -v python3.11 >/dev/null 2>&1; then
    echo python3.11
  else
    echo python3
  fi
}

python_env() {
  local wanted have python pip_args=()
  wanted=$(cat "${python_requirements[@]}" | sha256sum | cut -d' ' -f1)
  have=$(cat "$venv_stamp" 2>/dev/null || true)
  if [ "$have" != "$wanted" ] || ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    python=$(pick_python)
    echo "== preparing $venv ($("$python" --version 2>&1)) from ${python_requirements[*]}"
    rm -f "$venv_stamp"
    "$python" -m venv --clear "$venv"
    for file in "${python_requirements[@]}"; do
      pip_args+=(-r "$file")
    done
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
      "${pip_args[@]}"
    echo "$wanted" >"$venv_stamp"
  fi
  VENV_PYTHON="$venv/bin/python"
}

# Builds the server and sets LITEJOBS_BIN to it.
build_server() {
  echo "== cargo build --locked"
  cargo build --locked
  local target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  export LITEJOBS_BIN="$target_dir/debug/litejobs"
  [ -x "$LITEJOBS_BIN" ] || { echo "no server binary at $LITEJOBS_BIN" >&2; exit 1; }
}
