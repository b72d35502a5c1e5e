"""Search: the multi-objective search over the super-network's sub-networks. Searchers
propose candidates, executors evaluate them, the runner drives the loop and stores every
trial, and the Pareto functions pick the front and the sub-network to export."""
