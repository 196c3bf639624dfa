"""The experiment layer above the three packages: results tables and figures from run
directories (``slaterec table``, ``slaterec plot``). None of the packages below imports it."""
