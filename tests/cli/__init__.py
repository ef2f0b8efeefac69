"""Tests of lakeexportd/cli/."""
