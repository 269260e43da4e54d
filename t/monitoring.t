#!/usr/bin/perl
# monitoring/: the Prometheus alert rules pass "promtool check rules", each
# alert fires in "promtool test rules"; the Grafana dashboard is valid JSON
# whose queries are valid PromQL; and every metric, label and label value
# that the rules, their tests and the dashboard name is one the module
# really exports, as read from a running nginx's metrics location.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP ();
use Time::HiRes qw(sleep);
use TikTokTest;

my $dir = "$FindBin::Bin/../monitoring";

plan skip_all => 'promtool is not installed (Debian package prometheus; .ci/test installs it)'
    unless grep { -x "$_/promtool" } split /:/, $ENV{PATH};
plan skip_all => 'YAML::XS is not installed (Debian package libyaml-libyaml-perl)'
    unless eval { require YAML::XS; 1 };

# --- what the module exports ---------------------------------------------

my $t = TikTokTest->new;
$t->start_redis;
$t->start_nginx(workers => 2, server => <<'EOF');
        location = /webhook {
            tiktok_reports_webhook;
            tiktok_reports_signature off;
        }
        location /status/ {
            tiktok_reports_status;
        }
        location = /metrics {
            tiktok_reports_metrics;
        }
EOF

# a report and a lookup, so that every family has samples; the workers'
# connection gauges appear once they are connected
my $body = json_encode({ results => [ tiktok_dlr(id => 'mon-1') ] });
my $res = $t->http(method => 'POST', path => '/webhook', body => $body,
                   headers => [ 'Content-Type' => 'application/json' ]);
is($res && $res->{status}, 200, 'a report is stored');
$t->http(path => '/status/mon-1');

my ($scrape, %exported);
for (1 .. 50) {
    $scrape = $t->http(path => '/metrics')->{body};
    last if ($scrape =~ tr/\n//) && $scrape =~ /^tiktok_reports_redis_connected\{.*worker="1"/m;
    sleep 0.1;
}
like($scrape, qr/^tiktok_reports_redis_connected\{/m, 'the scrape has the connection gauges');

# name -> label -> { value => 1 }; histograms as their _bucket, _sum, _count
my %type = $scrape =~ /^# TYPE (\S+) (\S+)$/mg;
for my $line (grep { !/^#/ && /\S/ } split /\n/, $scrape) {
    my ($name, $labels) = $line =~ /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? \S+$/
        or next;
    $exported{$name} ||= {};
    while (($labels // '') =~ /(\w+)="((?:[^"\\]|\\.)*)"/g) {
        $exported{$name}{$1}{$2} = 1;
    }
}
ok(scalar(keys %type) >= 8, 'the scrape declares its metric families')
    or diag $scrape;
for my $name (keys %type) {
    my @names = $type{$name} eq 'histogram'
              ? map { "${name}_$_" } qw(bucket sum count) : ($name);
    ok($exported{$_}, "$_ has samples") for @names;
}

# --- the alert rules ------------------------------------------------------

my $out = `cd $dir && promtool check rules alerts.yml 2>&1`;
is($?, 0, 'promtool check rules alerts.yml') or diag $out;

$out = `cd $dir && promtool test rules alerts.test.yml 2>&1`;
is($?, 0, 'promtool test rules alerts.test.yml') or diag $out;
like($out, qr/SUCCESS/, 'the rule tests pass');

my $rules = YAML::XS::LoadFile("$dir/alerts.yml");
my @alerts = map { @{ $_->{rules} } } @{ $rules->{groups} };
my %wanted = map { $_ => 1 } qw(TikTokReportsRedisUnavailable TikTokReportsWebhook5xx
                                TikTokReportsSignatureFailures TikTokReportsRejectedResults
                                TikTokReportsRedisReconnecting);
delete $wanted{$_->{alert}} for @alerts;
is_deeply([ sort keys %wanted ], [], 'Redis unavailable, 5xx ratio, signature failures, rejected results and reconnects have an alert');

# every alert fires in a test (promtool fails a test whose expected alert
# does not fire), and is expected silent before that
my $tests = YAML::XS::LoadFile("$dir/alerts.test.yml");
my (%fires, %silent);
for my $case (@{ $tests->{tests} }) {
    for my $a (@{ $case->{alert_rule_test} }) {
        if (@{ $a->{exp_alerts} || [] }) { $fires{$a->{alertname}} = 1 }
        else { $silent{$a->{alertname}} = 1 }
    }
    # the input series are in the module's own names and labels
    for my $s (@{ $case->{input_series} }) {
        check_selector($s->{series}, "alerts.test.yml series $s->{series}");
    }
}
for my $a (@alerts) {
    ok($fires{$a->{alert}}, "$a->{alert} fires in alerts.test.yml");
    ok($silent{$a->{alert}}, "$a->{alert} is silent in alerts.test.yml before that");
    check_expr($a->{expr}, "alert $a->{alert}");
    like($a->{annotations}{summary} // '', qr/\S/, "$a->{alert} has a summary");
}

# --- the dashboard --------------------------------------------------------

my $json = do { local $/; open my $fh, '<', "$dir/dashboard.json" or die $!; <$fh> };
my $dash = eval { JSON::PP->new->decode($json) };
ok($dash, 'dashboard.json is JSON') or diag $@;
$dash ||= {};
ok($dash->{uid} && $dash->{title}, 'the dashboard has a uid and a title');
my @panels = @{ $dash->{panels} || [] };
ok(@panels >= 8, 'the dashboard has panels');
my %ids;
my @exprs;
for my $p (@panels) {
    ok(!$ids{$p->{id}}++, "panel id $p->{id} is unique");
    my @targets = @{ $p->{targets} || [] };
    ok(@targets, "panel \"$p->{title}\" has queries");
    is($p->{datasource}{uid}, '${datasource}', "panel \"$p->{title}\" uses the data source variable");
    push @exprs, map { [ $p->{title}, $_->{expr} ] } @targets;
}
my ($var) = grep { $_->{name} eq 'instance' } @{ $dash->{templating}{list} || [] };
push @exprs, [ 'variable instance', $var->{definition} =~ s/^label_values\((\w+), \w+\)$/$1/r ]
    if $var;

# Grafana's variables as Prometheus would see them after Grafana
sub grafana { my $e = shift; $e =~ s/\$__rate_interval/5m/g; $e =~ s/\$__range/6h/g;
              $e =~ s/\$instance/.*/g; return $e }

# promtool checks the queries' PromQL, as recording rules
my $tmp = $t->dir . '/dashboard-rules.yml';
open my $fh, '>', $tmp or die $!;
print $fh JSON::PP->new->encode({ groups => [ { name => 'dashboard', rules => [
    map { { record => "dashboard:expr_$_", expr => grafana($exprs[$_][1]) } } 0 .. $#exprs
] } ] });
close $fh;
$out = `promtool check rules $tmp 2>&1`;
is($?, 0, 'every dashboard query is valid PromQL') or diag $out;
like($out, qr/SUCCESS: ${\ scalar @exprs} rules found/, 'promtool read all of them');

check_expr(grafana($_->[1]), "dashboard \"$_->[0]\"") for @exprs;

# every family the module exports has a panel (a histogram by any of its
# series), so that a new metric comes with one
my %shown;
for my $e (@exprs) {
    for my $sel (selectors(grafana($e->[1]))) {
        (my $family = $sel->[0]) =~ s/_(?:bucket|sum|count)$//;
        $shown{$_} = 1 for $sel->[0], $family;
    }
}
ok($shown{$_}, "$_ has a dashboard panel") for sort keys %type;

$t->check_logs;
done_testing;

# --- PromQL, as far as these files need it --------------------------------

# the selectors of an expression: [name, [[label, op, value], ...]]
sub selectors {
    my ($e) = @_;
    # label lists of aggregations and vector matching, range and offset
    $e =~ s/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/ /g;
    $e =~ s/\[[^\]]*\]/ /g;
    my @sel;
    while ($e =~ /([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?/g) {
        my ($name, $m) = ($1, $2);
        my $rest = substr($e, pos($e));
        next if !$m && $rest =~ /^\s*\(/;       # a function or aggregation
        next if !$m && $name =~ /^(?:or|and|unless|bool|offset|inf|nan)$/i;
        my @m;
        while (($m // '') =~ /(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g) {
            push @m, [ $1, $2, $3 ];
        }
        push @sel, [ $name, \@m ];
    }
    return @sel;
}

sub check_expr {
    my ($e, $what) = @_;
    my @sel = selectors($e);
    ok(@sel, "$what: reads a metric");
    check_selector($_, $what) for @sel;
}

# a selector, or a series string of promtool's tests
sub check_selector {
    my ($s, $what) = @_;
    my ($name, $matchers) = ref $s ? @$s : do {
        my ($n, $l) = $s =~ /^([a-zA-Z_:][\w:]*)(\{.*\})?$/;
        my @m;
        push @m, [ $1, $2, $3 ] while ($l // '') =~ /(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g;
        ($n, \@m);
    };
    my $labels = $exported{$name};
    ok($labels, "$what: $name is exported by the module") or return;
    for my $m (@$matchers) {
        my ($label, $op, $value) = @$m;
        next if $label eq 'instance' || $label eq 'job';   # Prometheus's own
        my @values = keys %{ $labels->{$label} || {} };
        ok(@values, "$what: $name has a label $label") or next;
        if ($op eq '=') {
            # the module prints every code, kind, outcome and bucket; the
            # gauges' worker and redis depend on the installation
            next if $label =~ /^(?:worker|redis)$/;
            ok($labels->{$label}{$value}, "$what: $name\{$label=\"$value\"} exists");
        } elsif ($op eq '=~') {
            ok(scalar(grep { /^(?:$value)$/ } @values),
               "$what: $name\{$label=~\"$value\"} matches a value");
        }
    }
}
