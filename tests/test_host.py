"""`jscale.host`: which machine a run came from (float32 results' low digits follow the CPU)."""
import platform

import jax

from jscale import host

# Two processors, as /proc/cpuinfo lists them: only the first is read, and a value may itself hold a colon.
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Processor @ 2.50GHz
flags\t\t: fpu avx512f

processor\t: 1
cpu family\t: 7
model\t\t: 1
model name\t: Another CPU
"""


def test_reads_the_first_processor(tmp_path):
  p = tmp_path / "cpuinfo"
  p.write_text(CPUINFO)
  d = host.describe(str(p))
  assert d["cpu"] == "Intel(R) Xeon(R) Processor @ 2.50GHz" and d["cpu_family_model"] == "6/85"
  assert d["jax"] == jax.__version__ and isinstance(d["logical_cpus"], int)
  assert host.summary(d) == (f"Intel(R) Xeon(R) Processor @ 2.50GHz (family/model 6/85), {d['logical_cpus']} "
                             f"logical CPUs, jax {jax.__version__}")


def test_without_cpuinfo_the_platform_names_the_cpu(tmp_path):
  d = host.describe(str(tmp_path / "absent"))
  assert d["cpu"] == (platform.processor() or "unknown") and d["cpu_family_model"] is None
  assert "family/model" not in host.summary(d) and host.summary(None) == ""
