"""Tests with known outcomes, to check the runner: run.py --package conformance_selftest.

Each test's name says what the runner must record for it; selftest/expectations.txt lists the
ones that do not pass, so a correct runner exits 0 on this package (see conformance/README.md).
"""

import asyncio
import os
import time
import unittest


class Outcomes(unittest.TestCase):
    def test_1_passes_on_a_hooked_loop(self):
        asyncio.run(asyncio.sleep(0))

    def test_2_hangs(self):
        time.sleep(3600)

    def test_3_fails(self):
        self.assertEqual(1, 2)

    def test_4_crashes(self):
        os.abort()

    def test_5_passes_after_the_restarts(self):
        pass

    def test_6_fails_in_a_subtest(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)

    @unittest.skip("skipped on purpose")
    def test_7_skipped(self):
        pass


class SetUpClassFails(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        raise RuntimeError("setUpClass fails on purpose")

    def test_never_runs(self):
        pass


class TearDownClassHangs(unittest.TestCase):
    def test_passes(self):
        pass

    @classmethod
    def tearDownClass(cls):
        time.sleep(3600)
