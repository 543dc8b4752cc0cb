from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audits', '0002_lineage'),
    ]

    operations = [
        migrations.AddField(
            model_name='generation',
            name='lineage_credit',
            field=models.CharField(blank=True, choices=[('making', 'Making'), ('cumulative', 'Cumulative')], max_length=16),
        ),
    ]
