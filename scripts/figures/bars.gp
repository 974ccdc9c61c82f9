# bars.gp: clustered bars with 95 % confidence intervals.
# Data: one row per group (first column its label, quoted), then for each
# series three columns: mean, low and high end of the interval.
#   datafile, nseries, names (space-separated series names), plus common.gp's
#   variables; ymin (default 0), logy (1: logarithmic y axis) and xrot (the
#   group labels' angle, default -25).
load scriptdir."/common.gp"
set style data histogram
set style histogram errorbars gap 2 lw 1.2
set style fill solid 0.75 border -1
set boxwidth 0.9
set key outside right top vertical
if (!exists("xrot")) xrot = -25
set xtics rotate by xrot
if (!exists("logy")) logy = 0
if (logy) { set logscale y } else { set yrange [0:*] }
plot for [i=1:nseries] datafile using (column(3*i-1)):(column(3*i)):(column(3*i+1)):xtic(1) title word(names, i) lt i
