"""Statistics over seeds, summary tables, the figure and the results page."""
