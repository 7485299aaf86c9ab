"""A write interrupted at any point leaves a store that opens and verifies (kill -9 in a child)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from divergent.store import Store

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from divergent.store import Store
    st = Store.open(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    for i in range(1000):
        with st.writer() as w:
            w.put(f"w{sys.argv[2]}_{i}", "test", logits=rng.normal(size=(600, 5)).astype(np.float32))
            if i % 3 == 0:
                w.remove(f"w{sys.argv[2]}_{i}")
""")


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.7, 1.2, 1.9])
def test_kill_minus_9_during_writes(toy_store, delay, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(toy_store.root), str(int(delay * 100))])
    time.sleep(delay + 0.6)  # interpreter start-up, then some writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = Store.open(toy_store.root)
    assert st.verify() == []
    assert {"m0", "m1", "m2"} <= set(st.models)
    for m in st.models:
        assert st.array(m, "test", "logits").shape == (600, 5)
    # and the lock died with the writer
    with st.writer() as w:
        w.put("after", "test", logits=np.zeros((600, 5), np.float32))
