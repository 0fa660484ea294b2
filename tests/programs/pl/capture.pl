# perl output paths; LOGFILE is the tap file.
use strict;
use warnings;
for my $i (0 .. 299) {
    print "perl print $i\n";
    print STDERR "perl stderr $i\n" if $i % 5 == 0;
    printf "perl printf %05d\n", $i;
}
open(my $fh, '>>', $ENV{LOGFILE}) or die "open: $!";
for my $i (0 .. 199) {
    print $fh "perl log line $i\n";
}
close($fh);
open(my $fh2, '>>', $ENV{LOGFILE}) or die "open: $!";
print $fh2 "left open at exit\n";
syswrite(STDOUT, "syswrite stdout\n");
print "buffered at exit";
