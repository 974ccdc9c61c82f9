# lines.gp: series against x with 95 % confidence intervals; one data block
# (separated by two blank lines) per series: x, mean, low, high, x label.
#   datafile, nseries, names, plus common.gp's variables;
#   logx (1: log x), xlabels (1: use column 5 as tic labels), ymin
load scriptdir."/common.gp"
set key top left
if (!exists("logx")) logx = 0
if (!exists("xlabels")) xlabels = 0
if (logx) { set logscale x }
set yrange [0:*]
if (xlabels) {
    plot for [i=0:nseries-1] datafile index i using 1:2:3:4:xtic(5) with yerrorlines title word(names, i+1) lt (i+1)
} else {
    plot for [i=0:nseries-1] datafile index i using 1:2:3:4 with yerrorlines title word(names, i+1) lt (i+1)
}
