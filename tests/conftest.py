import os

from hypothesis import HealthCheck, settings

# A fast profile for CI and a thorough one for local runs: HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
