#!/usr/bin/perl
# The parser and the signature code on their own, without nginx: each
# t/unit/test_*.c is built (with ASan+UBSan when the compiler has them)
# and must print only passing TAP lines.

use strict;
use warnings;
use FindBin;
use File::Temp ();
use Cwd ();
use Test::More;

my $root = Cwd::abs_path("$FindBin::Bin/..");
my $src = "$root/ngx_tiktok_reports_module";
my $dir = File::Temp::tempdir(CLEANUP => 1);
my @flags = (qw(-std=gnu99 -W -Wall -Wpointer-arith -Wno-unused-parameter),
               qw(-Werror -O1 -g));
my @san = ('-fsanitize=address,undefined', '-fno-omit-frame-pointer',
           '-fno-sanitize-recover=undefined');

my %units = (
    parser    => [ 'ngx_tiktok_reports_parser.c', '-lyajl' ],
    signature => [ 'ngx_tiktok_reports_signature.c', '-lcrypto' ],
);

# TT_COVERAGE=1 (.ci/coverage): built with --coverage instead, objects kept
# in build/coverage/unit, where gcovr finds their counts
my $cov = $ENV{TT_COVERAGE} ? "$root/build/coverage/unit" : undef;

for my $name (sort keys %units) {
    my ($file, $lib) = @{ $units{$name} };
    my $bin = "$dir/test_$name";
    my $out;
    if ($cov) {
        my $odir = "$cov/$name";
        system('mkdir', '-p', $odir);
        $out = '';
        my ($failed, @obj) = (0);
        for my $c ("$src/$file", "$root/t/unit/test_$name.c") {
            (my $o = $c) =~ s{.*/}{$odir/};
            $o =~ s/\.c$/.o/;
            $out .= `cc @flags -O0 --coverage -I$src -c $c -o $o 2>&1`;
            $failed ||= $?;
            push @obj, $o;
        }
        $out .= `cc --coverage @obj $lib -o $bin 2>&1`;
        $? ||= $failed;
    } else {
        my @cmd = ('cc', @flags, @san, "-I$src", "$src/$file",
                   "$root/t/unit/test_$name.c", $lib, '-o', $bin);
        $out = `@cmd 2>&1`;
    }
    is($?, 0, "$name: unit test builds") or diag $out;
    next if $?;
    $out = `ASAN_OPTIONS=detect_leaks=1 $bin 2>&1`;
    my $rc = $? >> 8;
    my @ok = $out =~ /^ok \d+/mg;
    my @not = $out =~ /^(not ok \d+.*)$/mg;
    is($rc, 0, "$name: unit test exits 0") or diag $out;
    ok(@ok > 10, "$name: " . scalar(@ok) . ' unit checks passed');
    is(scalar @not, 0, "$name: no failing unit check") or diag join "\n", @not;
}

done_testing;
