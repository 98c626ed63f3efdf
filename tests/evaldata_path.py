"""Where the shared evaluation sets live: $AMRAY_EVALDATA, else `../shared/evaldata` beside the
checkout, else /work/shared/evaldata (tests that need them skip when none exists)."""

import os
from pathlib import Path

_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "evaldata", Path("/work/shared/evaldata")]
EVALDATA = Path(os.environ["AMRAY_EVALDATA"]) if os.environ.get("AMRAY_EVALDATA") else next(
    (p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])

import pytest  # noqa: E402

needs_evaldata = pytest.mark.skipif(not EVALDATA.is_dir(), reason=f"eval sets not found at {EVALDATA} (set AMRAY_EVALDATA)")
