"""Reports and the overview's figures: what pages, CSV exports and the API share.

Each report is built for a user (only the vaults `vaults.access.visible` gives them) and a
`Period`; it is a `Table` (the numbers, the CSV and the API rows) plus `Chart`s drawn from the
same numbers, so a chart, its table, the CSV and the API can never disagree.
"""
