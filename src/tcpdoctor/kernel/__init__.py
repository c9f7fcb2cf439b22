"""The one home of Linux TCP facts: states, timers, constants, formulas, sysctls, counters.

Nothing outside this package hard-codes a kernel number. Every fact names the kernel
symbol or source file it comes from.
"""
