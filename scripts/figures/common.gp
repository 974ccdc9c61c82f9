# common.gp: terminal and style shared by the figure scripts.
# Variables set by the caller (runner/figures.py, gnuplot -e):
#   outfile  the figure's path;  fmt  "png" (reading) or "svg" (papers)
#   ttl      the title;  ylab, xlab  axis labels
#   width, height  the canvas (default 900 x 520; wider for many groups)
if (!exists("width")) width = 900
if (!exists("height")) height = 520
if (fmt eq "svg") {
    set terminal svg size width,height dynamic font "Helvetica,13" background "white"
} else {
    set terminal pngcairo size width,height font "Helvetica,10" background "white"
}
set output outfile
set title ttl noenhanced
set ylabel ylab noenhanced
set xlabel xlab noenhanced
set grid ytics lc rgb "#dddddd"
set border 3
set tics nomirror
set key noenhanced
# tcp, tls, quic and then any other series, in this order
set linetype 1 lc rgb "#1b6ca8" lw 2 pt 7
set linetype 2 lc rgb "#d1495b" lw 2 pt 5
set linetype 3 lc rgb "#2e8b57" lw 2 pt 9
set linetype 4 lc rgb "#edae49" lw 2 pt 11
set linetype 5 lc rgb "#66465e" lw 2 pt 13
set linetype 6 lc rgb "#00798c" lw 2 pt 3
