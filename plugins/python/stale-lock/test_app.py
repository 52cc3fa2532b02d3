"""Plain-Python tests of stale-lock: no host, no component build.

    cd plugins/python/stale-lock && PYTHONPATH=.. python3 -m unittest
"""

import unittest
from types import SimpleNamespace

import doctor_sdk as doctor
from app import StaleLock


def process(pid):
    return SimpleNamespace(id=SimpleNamespace(pid=pid, start_time=1))


class StaleLockTest(unittest.TestCase):
    def test_a_lock_naming_no_process_is_stale_and_its_removal_planned(self):
        facts = doctor.testing.Facts().file("/run/app.lock", "424242\n").processes([])
        findings = facts.run(StaleLock, {"lock_files": ["/run/app.lock"]})
        self.assertEqual([f.key for f in findings], ["stale-lock:/run/app.lock"])
        self.assertEqual(findings[0].actions[0][:2], ("remove-file", "/run/app.lock"))

    def test_a_lock_naming_a_live_process_is_fine(self):
        facts = doctor.testing.Facts().file("/run/app.lock", "7\n").processes([process(7)])
        self.assertEqual(facts.run(StaleLock, {"lock_files": ["/run/app.lock"]}), [])

    def test_a_missing_lock_is_no_finding(self):
        facts = doctor.testing.Facts().processes([])
        self.assertEqual(facts.run(StaleLock, {"lock_files": ["/run/none.lock"]}), [])

    def test_a_denied_read_is_the_plugins_error(self):
        def denied(path, max_bytes):
            raise doctor.Denied("policy does not grant plugin stale-lock `grants.files`")

        facts = doctor.testing.Facts().on("files.read", denied).processes([])
        with self.assertRaises(doctor.Denied):
            facts.run(StaleLock, {"lock_files": ["/run/app.lock"]})


if __name__ == "__main__":
    unittest.main()
