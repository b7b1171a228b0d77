"""Topologies as data; the same description drives netns labs, Mininet and the simulator."""
