"""Tests of lakeexportd/feeds/."""
