"""The test suite. Folders mirror the package and the kinds of test; see README, Development."""
