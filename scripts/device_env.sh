# Sourced by the scripts run on a lent device machine (gpu_check.sh, device_offline_slice.sh):
# the packages that machine lacks, installed from the wheels that travel in .whl/ (ignored by
# git; see CONTRIBUTING.md), this checkout on the import path, one thread per process.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
