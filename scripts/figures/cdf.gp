# cdf.gp: cumulative distributions, one data block (separated by two blank
# lines) per series: value, fraction of samples at or below it.
#   datafile, nseries, names, plus common.gp's variables; logx (1: log x)
load scriptdir."/common.gp"
set key bottom right
set yrange [0:1.0]
set ytics 0.1
if (!exists("logx")) logx = 1
if (logx) { set logscale x }
plot for [i=0:nseries-1] datafile index i using 1:2 with steps title word(names, i+1) lt (i+1)
