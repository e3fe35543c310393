"""Adapter tags → thing metrics: mapping, scaling, diff (`mapping`) and expressions."""
