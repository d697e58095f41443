#!/bin/sh
# spine-at-now.sh IN OUT: copy the spine IN to OUT with its
# event_timestamp column (epoch milliseconds) shifted so that the latest
# row is now, and give OUT's absolute path as the step output `spine`.
#
# The example spine was labelled at fixed times, but `mlopsd dev`'s
# generator makes events as it runs, so the churn-retrain DAG replays the
# spine as of the moment it runs; with real data, point training-set at
# the spine itself.
set -eu
in=$1 out=$2
now=$(date +%s%3N)
awk -F, -v OFS=, -v now="$now" '
	NR == FNR {
		if (FNR == 1) {
			for (i = 1; i <= NF; i++)
				if ($i == "event_timestamp")
					col = i
		} else if (FNR == 2 || $col > max)
			max = $col
		next
	}
	FNR == 1 { if (!col) { print "no event_timestamp column" > "/dev/stderr"; exit 1 }
		print; next }
	{ $col = sprintf("%.0f", $col - max + now); print }
' "$in" "$in" > "$out"
echo "spine=$(pwd)/$out" >> "${MLOPSD_OUTPUTS:-/dev/null}"
echo "rows=$(($(wc -l < "$out") - 1))" >> "${MLOPSD_OUTPUTS:-/dev/null}"
